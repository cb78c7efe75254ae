"""A per-machine memo of file digests, so a multi-GB checkpoint is hashed once, not every run.

An entry is keyed by what identifies one version of one file: its real path, size, mtime_ns,
ctime_ns, inode and device. Rewriting a file changes its mtime and ctime (ctime cannot be set
back by a user), so a changed file is hashed again; an unchanged one is read from the memo. The
digest itself is the same sha256 a fresh read gives: fingerprints do not change. Used only while
`memo(root)` is active (the runner points it into the qrecipe cache); small files are always
hashed (cheaper than the lookup).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

_ROOT: Optional[Path] = None
MIN_BYTES = 1 << 20


@contextmanager
def memo(root: Path) -> Iterator[None]:
    global _ROOT
    old, _ROOT = _ROOT, Path(root)
    try:
        yield
    finally:
        _ROOT = old


def _identity(path: Path) -> dict:
    st = os.stat(path)
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "device": st.st_dev}


def digest(path: Path, compute: Callable[[Path], str]) -> str:
    """compute(path), or the memo's digest of this exact version of the file."""
    if _ROOT is None or os.path.getsize(path) < MIN_BYTES:
        return compute(path)
    import hashlib

    ident = _identity(path)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    entry = _ROOT / key[:2] / f"{key}.json"
    try:
        saved = json.loads(entry.read_text())
        if saved.get("identity") == ident:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    value = compute(path)
    if _identity(path) == ident:  # not rewritten while it was read
        _write(entry, {"identity": ident, "sha256": value})
    return value


def _write(entry: Path, data: dict) -> None:
    import tempfile
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, entry)
    except OSError:  # a read-only cache only costs the next run a re-hash
        pass
