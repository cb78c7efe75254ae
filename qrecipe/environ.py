"""Setting an environment variable for a block and putting back what was there: the libraries
read some settings from os.environ (gptqmodel's block-update switch, Hydra's search path,
CUDA_VISIBLE_DEVICES), and a value left behind outlives the job that set it: the next job of the
process (a sweep's, a test's) would run with it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional


def restore_env(key: str, before: Optional[str]) -> None:
    """os.environ[key] back to `before` (None: unset)."""
    if before is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = before


@contextmanager
def env_set(key: str, value: Optional[str]) -> Iterator[None]:
    """os.environ[key] = value for the block (None: left as it is), then as it was before."""
    before = os.environ.get(key)
    if value is not None:
        os.environ[key] = value
    try:
        yield
    finally:
        restore_env(key, before)
