"""sha256 fingerprints of files, texts and token ids: what makes two runs comparable.

Hashing multi-GB checkpoints is the one piece of qrecipe's own work that grows with the model, so
files are hashed in parallel threads (hashlib and file reads release the GIL), and the input's
fingerprint can be computed on a background thread (`Background`) while the backend works.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

from qrecipe.record.filehash import Cancelled, digest, sha256_stream

_CHUNK = 1 << 22
# Below this many bytes in all, threads cost more than they save.
_PARALLEL_BYTES = 1 << 24
MAX_THREADS = 8


def sha256_file(path: Path, stop: Optional[threading.Event] = None) -> str:
    """sha256 of a file's bytes (from the file-hash memo when one is active: filehash.py)."""
    return digest(Path(path), lambda p: _sha256_read(p, stop))


def _sha256_read(path: Path, stop: Optional[threading.Event] = None) -> str:
    with open(path, "rb", buffering=0) as f:
        return sha256_stream(f, _CHUNK, stop)[0]


def sha256_files(paths: Iterable[Path], stop: Optional[threading.Event] = None
                 ) -> Dict[Path, str]:
    """{path: sha256} of several files, read side by side by up to MAX_THREADS threads (the
    shards of a checkpoint are not hashed one after another)."""
    paths = [Path(p) for p in paths]
    sizes = {p: os.path.getsize(p) for p in paths}
    if sum(sizes.values()) < _PARALLEL_BYTES:
        return {p: sha256_file(p, stop) for p in paths}
    return parallel(sha256_file, sorted(paths, key=lambda p: -sizes[p]), stop)


def parallel(fn: Callable[[Any, threading.Event], Any], items: Iterable[Any],
             stop: Optional[threading.Event] = None) -> Dict[Any, Any]:
    """{item: fn(item, stop)} on up to MAX_THREADS daemon threads (for work that releases the
    GIL: hashing, file I/O), items taken in the order given. The first error is raised once
    every thread has stopped; the others give up at their next block (fn checks `stop`), as
    they do when the caller's `stop` is set or the caller is interrupted (Ctrl-C)."""
    todo: List[Any] = list(items)
    n = min(len(todo), MAX_THREADS, os.cpu_count() or 1)
    inner = threading.Event()  # set on the first error, or when the caller's stop is set
    if n <= 1:
        return {i: fn(i, stop or inner) for i in todo}
    out: Dict[Any, Any] = {}
    errors: List[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        while not inner.is_set():
            with lock:
                if not todo:
                    return
                item = todo.pop(0)
            try:
                out[item] = fn(item, inner)
            except BaseException as e:  # noqa: BLE001 - handed to the caller below
                errors.append(e)
                inner.set()

    threads = [threading.Thread(target=worker, daemon=True, name="qrecipe-io") for _ in range(n)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.1)
                if stop is not None and stop.is_set():
                    inner.set()
    except BaseException:  # e.g. Ctrl-C: the threads stop at their next block
        inner.set()
        raise
    real = [e for e in errors if not isinstance(e, Cancelled)]
    if errors:
        raise (real or errors)[0]
    return out


def hash_files(paths: Iterable[Path], stop: Optional[threading.Event] = None) -> str:
    """One digest over several files, by name and content (order-independent)."""
    paths = sorted(Path(p) for p in paths)
    digests = sha256_files(dict.fromkeys(paths), stop)  # a file named twice is read once
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0" + digests[p].encode() + b"\n")
    return h.hexdigest()


class Background:
    """fn(stop) computed on a daemon thread, started now; result() waits for it and re-raises
    its exception in the caller. The job asks for the value only where it is first needed, so
    hashing a checkpoint overlaps the imports, the backend's load and its quantization instead
    of adding to them. cancel() makes a hash give up at its next block (a failed job does not
    keep reading GBs); a daemon thread never holds up the process's exit."""

    def __init__(self, fn: Callable[[threading.Event], Any], name: str):
        self.stop = threading.Event()
        self.seconds: Optional[float] = None  # how long fn ran
        self.waited = 0.0  # how long result() callers were blocked
        self._future: Future = Future()
        threading.Thread(target=self._run, args=(fn,), name=name, daemon=True).start()

    def _run(self, fn) -> None:
        t0 = time.perf_counter()
        try:
            self._future.set_result(fn(self.stop))
        except BaseException as e:  # noqa: BLE001 - re-raised by result()
            self._future.set_exception(e)
        finally:
            self.seconds = round(time.perf_counter() - t0, 3)

    def done(self) -> bool:
        return self._future.done()

    def result(self) -> Any:
        t0 = time.perf_counter()
        try:
            return self._future.result()
        finally:
            self.waited = round(self.waited + time.perf_counter() - t0, 3)

    def cancel(self) -> None:
        self.stop.set()


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
