"""Backend adapters behind one registry. Importing an adapter module is cheap: each imports its
library (gptqmodel, llmcompressor, bitsandbytes, torch) only inside `quantize`."""
from .base import BACKENDS, Backend, MethodSupport, QuantizeRequest, QuantizeResult
from . import gptqmodel_backend, llmcompressor_backend, bnb_backend  # noqa: F401  (registration)

__all__ = ["BACKENDS", "Backend", "MethodSupport", "QuantizeRequest", "QuantizeResult"]
