"""The llm-compressor adapter (GPTQ, AWQ, RTN -> compressed-tensors) and the patches it needs."""
