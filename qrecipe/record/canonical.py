"""The canonical layout of .safetensors files: the one safetensors' own writer gives them
(tensors by dtype, then name), so that a file's sha256 depends on its tensors, not on the order
a library registered them in (gptqmodel resumed from a layer checkpoint saves them in another
order). The gptqmodel adapter has gptqmodel write that layout itself (canonical_order); then
canonicalize() only reads each header. Any other file is rewritten here by streaming byte
ranges: no tensor is materialized, the file is written once more, and its sha256 is computed on
the way and handed to the file-hash memo (filehash.remember), so the runner does not read it
again. tests/test_canonical.py checks the bytes against safetensors' load_file + save_file.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import mmap
import os
import struct
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from qrecipe.record import filehash
from qrecipe.record.atomic import replacing
from qrecipe.record.fingerprint import Cancelled, parallel
from qrecipe.record.stheader import read_header

_CHUNK = 1 << 24


def canonicalize(out_dir: Path) -> None:
    """Every *.safetensors file of out_dir, in canonical layout (files side by side)."""
    files = sorted(Path(out_dir).glob("*.safetensors"))
    parallel(_canonicalize_file, files)


def canonical_order(dtypes: Dict[str, str]) -> Optional[List[str]]:
    """Tensor names ({name: safetensors dtype}) in the order safetensors writes them, asked of
    safetensors itself (zero-size tensors of the same names and dtypes), so its dtype ranking is
    never copied here. None when a dtype has no torch equivalent here."""
    import torch
    from safetensors.torch import save
    try:
        from safetensors.torch import _TYPES
    except ImportError:
        return None
    probe = {}
    for name, dtype in dtypes.items():
        if _TYPES.get(dtype) is None:
            return None
        probe[name] = torch.empty(0, dtype=_TYPES[dtype])
    _, order = read_header(io.BytesIO(save(probe)))
    return [k for k in order if k != "__metadata__"]


def header_bytes(header: dict, order: List[str]) -> bytes:
    """The header safetensors writes: compact JSON (metadata first, then tensors in data order,
    offsets from 0), padded with spaces to a multiple of 8 bytes, after its u64 length."""
    new: Dict[str, object] = {}
    if "__metadata__" in header:
        new["__metadata__"] = header["__metadata__"]
    offset = 0
    for name in order:
        info = header[name]
        size = info["data_offsets"][1] - info["data_offsets"][0]
        new[name] = {"dtype": info["dtype"], "shape": info["shape"],
                     "data_offsets": [offset, offset + size]}
        offset += size
    body = json.dumps(new, separators=(",", ":"), ensure_ascii=False).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


def _canonicalize_file(f: Path, stop: Optional[threading.Event] = None) -> None:
    src = open(f, "rb")
    try:
        n, header = read_header(src)
        order = canonical_order({k: v["dtype"] for k, v in header.items()
                                 if k != "__metadata__"})
        if order is None:  # then the file is rewritten through safetensors
            src.close()
            _rewrite_through_safetensors(f)
            return
        head = header_bytes(header, order)
        src.seek(0)
        if src.read(len(head)) == head and os.path.getsize(f) == len(head) + sum(
                header[k]["data_offsets"][1] - header[k]["data_offsets"][0] for k in order):
            src.close()
            return  # already canonical: same header, hence the same data order
        with replacing(f) as tmp:
            digest = _copy(src, 8 + n, header, order, head, tmp, stop)
    except BaseException:
        src.close()
        raise
    # The replaced file's blocks are freed when its last descriptor closes (~0.5 s per GB on
    # ext4): that happens on a thread, not in the job's path.
    threading.Thread(target=src.close, name="qrecipe-free", daemon=True).start()
    filehash.remember(f, digest)


def _copy(src, base: int, header: dict, order: List[str], head: bytes, tmp: Path,
          stop: Optional[threading.Event]) -> str:
    """Write head, then every tensor's bytes in `order`, into tmp; returns the sha256 of what
    was written. The kernel copies (copy_file_range: no pass through Python) while a second
    thread hashes the same source ranges from a read-only map: the two overlap (both release
    the GIL) instead of adding up."""
    ranges = [(base + header[k]["data_offsets"][0], base + header[k]["data_offsets"][1])
              for k in order]
    jobs = {"hash": lambda stop_: _hash_ranges(src.fileno(), head, ranges, stop_),
            "copy": lambda stop_: _copy_ranges(src, ranges, head, tmp, stop_)}
    return parallel(lambda name, stop_: jobs[name](stop_), list(jobs), stop)["hash"]


def _hash_ranges(fd: int, head: bytes, ranges, stop) -> str:
    h = hashlib.sha256(head)
    if os.fstat(fd).st_size == 0:
        return h.hexdigest()
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            for begin, end in ranges:
                for at in range(begin, end, _CHUNK):
                    if stop.is_set():
                        raise Cancelled("hash")
                    h.update(view[at:min(end, at + _CHUNK)])
        finally:
            view.release()
    return h.hexdigest()


def _copy_ranges(src, ranges, head: bytes, tmp: Path, stop) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pos = _pwrite_all(fd, head, 0)
        for begin, end in ranges:
            at = begin
            while at < end:
                if stop.is_set():
                    raise Cancelled(str(tmp))
                got = _copy_once(src.fileno(), fd, min(_CHUNK, end - at), at, pos)
                if got <= 0:
                    raise OSError(f"{src.name}: truncated at byte {at}")
                at, pos = at + got, pos + got
    finally:
        os.close(fd)


def _copy_once(src: int, dst: int, n: int, at: int, pos: int) -> int:
    copy = getattr(os, "copy_file_range", None)  # Linux
    try:
        if copy is not None:
            return copy(src, dst, n, at, pos)
    except OSError as e:  # a file system (or kernel) without it: through user space
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    return _pwrite_all(dst, os.pread(src, n, at), pos) - pos


def _pwrite_all(fd: int, data: bytes, pos: int) -> int:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
    return pos


def _rewrite_through_safetensors(f: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(f), "pt") as h:
        meta = h.metadata()
    with replacing(f) as tmp:
        save_file(load_file(str(f)), str(tmp), metadata=meta)
