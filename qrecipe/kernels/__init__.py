"""Which inference kernel serves a quantized checkpoint: the kernel table, the transformers
quantization config for it, and the compressed-tensors -> GPTQ rewrite."""
