"""CUDA as this process sees it, asked without importing torch: telemetry, env.json and the GPU
lease ask these in a job (or a config-only command) that may not have imported torch, and must
not pay its import (or initialize CUDA) for the answer. A top-level helper beside paths and
errors, so every layer (record, telemetry, kernels, backends, run) may use it.
"""
from __future__ import annotations

import sys
from typing import Any, Optional


def loaded() -> Optional[Any]:
    """torch.cuda when torch is already imported and sees a CUDA device, else None."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda
    return None


def initialized() -> bool:
    """Whether this process has already initialized CUDA (then CUDA_VISIBLE_DEVICES no longer
    applies)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def capability(index: int = 0) -> Optional[float]:
    """Compute capability of CUDA device `index` (9.0 on an H100) where torch is imported and
    sees one, else None. The one place it is read: the kernel choice at reload, `kernels build`
    and the background builds decide by it."""
    c = loaded()
    if c is None:
        return None
    major, minor = c.get_device_capability(index)
    return major + minor / 10
