"""Evaluate: perplexity, decode speed and task accuracy of the fp and the quantized model."""
