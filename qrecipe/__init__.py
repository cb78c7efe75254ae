"""qrecipe: declarative, reproducible post-training quantization of LLMs."""
__version__ = "0.1.0"
