"""Writing a file so that a reader sees the old file or the whole new one, never a part: the
bytes go to a temp file beside it (same filesystem) that is renamed onto the path, which is
atomic on POSIX. Every file qrecipe writes for others to read (results, cache entries, memo
entries, canonical checkpoints) goes through here; a crash leaves at most a `.tmp-*` file,
which the manifest and the run-state check skip.

A write into a run directory names it (`root`): the temp file's directory is then reached from
root without following a symbolic link (qrecipe/boundary/rundir.py), the temp file is created
with O_EXCL (never through a link) and the rename replaces a link at the path rather than
writing through it. So a received directory cannot steer a write outside itself.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional

from qrecipe.boundary.rundir import real_dir, write_bytes_nofollow

TMP_PREFIX = ".tmp-"


@contextmanager
def replacing(path: Path, root: Optional[Path] = None) -> Iterator[Path]:
    """A temp path beside `path`, renamed onto it when the block ends, removed if it raises.
    The temp file exists (empty) on entry; writers may open it by name or truncate it. root:
    the run directory path lies in (no link followed on the way from it)."""
    path = Path(path)
    if root is not None:
        real_dir(root, path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results and caches are meant to be shared
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_with(path: Path, write: Callable[[IO[bytes]], Any],
               root: Optional[Path] = None) -> None:
    """write(f) into a binary file that replaces `path` once write returns."""
    with replacing(path, root) as tmp, open(tmp, "wb") as f:
        write(f)


def write_bytes(path: Path, data: bytes, root: Optional[Path] = None) -> None:
    if root is not None:  # into a run directory: every step without following a link
        write_bytes_nofollow(root, path, data)
    else:
        write_with(path, lambda f: f.write(data))
