"""sha256 fingerprints of files, texts and token ids: what makes two runs comparable."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

_CHUNK = 1 << 22


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes (from the file-hash memo when one is active: filehash.py)."""
    from .filehash import digest
    return digest(Path(path), _sha256_read)


def _sha256_read(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(paths: Iterable[Path]) -> str:
    """One digest over several files, by name and content (order-independent)."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(p.name.encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_tokens(rows) -> str:
    """Digest of token id rows (tensors or lists), as little-endian int64, row by row."""
    import numpy as np
    h = hashlib.sha256()
    for r in rows:
        arr = r.numpy() if hasattr(r, "numpy") else np.asarray(r)
        h.update(np.ascontiguousarray(arr, dtype="<i8").tobytes())
        h.update(b"\n")
    return h.hexdigest()
