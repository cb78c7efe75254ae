"""Backend adapters behind one registry. Importing an adapter module is cheap: each imports its
library (gptqmodel, llmcompressor, bitsandbytes, torch) only inside `quantize`."""
from qrecipe.backends import bitsandbytes  # noqa: F401  (registration)
from qrecipe.backends.base import (
    BACKENDS,
    Backend,
    MethodSupport,
    QuantizeRequest,
    QuantizeResult,
)
from qrecipe.backends.gptqmodel import adapter as _gptqmodel  # noqa: F401  (registration)
from qrecipe.backends.hqq import adapter as _hqq  # noqa: F401  (registration)
from qrecipe.backends.llmcompressor import adapter as _llmcompressor  # noqa: F401  (registration)

__all__ = ["BACKENDS", "Backend", "MethodSupport", "QuantizeRequest", "QuantizeResult"]
