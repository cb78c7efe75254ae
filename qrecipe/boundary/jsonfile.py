"""A JSON file from outside (a model folder's config.json or tokenizer_config.json) read as data,
with limits: a regular file (never a FIFO or a device, which would block or never end), at most
4 MiB (real config files are a few KiB; tokenizer.json, the big one, is never read here), UTF-8,
valid JSON, an object at the top, nested at most 64 levels. Anything else is one QRecipeError
naming the file and the config key, never a MemoryError, RecursionError or traceback."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Dict

from qrecipe.errors import QRecipeError

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64


def read_object(path: Path, key: str, max_bytes: int = MAX_BYTES) -> Dict[str, Any]:
    """The JSON object in `path`; a QRecipeError naming `key` and the file otherwise."""
    path = Path(path)

    def refuse(why: str) -> QRecipeError:
        return QRecipeError(f"{path.name} {why}", key=key, value=str(path))

    data = read_bounded(path, max_bytes, refuse)
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:  # the C parser's own guard: nested far past MAX_DEPTH
        raise refuse(f"nests deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as e:  # ValueError: JSON, or an int of 4300+ digits
        raise refuse(f"is not valid JSON ({_first_line(e)})") from None
    if not isinstance(value, dict):
        raise refuse(f"is not a JSON object (it holds a {type(value).__name__})")
    if depth(value) > MAX_DEPTH:
        raise refuse(f"nests deeper than {MAX_DEPTH} levels")
    return value


def read_bounded(path: Path, max_bytes: int, refuse) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then decides on the open file
    # (no window between a check and the open). Symlinks are followed: a hub snapshot's files
    # are symlinks into its blob store.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise refuse(f"cannot be read ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse("is not a regular file")
        if st.st_size > max_bytes:
            raise refuse(f"is {st.st_size} bytes, more than the {max_bytes} a config file may "
                         "have")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise refuse(f"is more than the {max_bytes} bytes a config file may have")
    return data


def depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (a scalar: 0). Iterative: no recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            todo.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__
