"""Library functions replaced for the length of one call (the gptqmodel adapter's speed and
memory fixes): set, then restored however the block ends."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Tuple


@contextmanager
def patched(replacements: Dict[Tuple[Any, str], Callable]) -> Iterator[None]:
    """owner.name = fn for each ((owner, name), fn) while the block runs (owner: a class or a
    module); the originals come back after it, also when it raises. An attribute the owner
    does not define itself raises KeyError before anything is replaced."""
    saved = [(owner, name, vars(owner)[name]) for owner, name in replacements]
    for (owner, name), fn in replacements.items():
        setattr(owner, name, fn)
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
