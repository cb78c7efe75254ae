"""Hand freed memory back to the OS. glibc by itself returns only the top of its heap, so large
temporaries freed below later allocations stay resident: the process's RSS (what `qrecipe plan`
predicts and metrics.json records) keeps them. glibc only; elsewhere a no-op."""
from __future__ import annotations

import ctypes
import gc


def release_free_memory(collect: bool = False) -> None:
    """malloc_trim(0), after a full garbage collection when `collect`."""
    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
