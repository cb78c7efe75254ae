"""One fast GGUF reader for the dequantization of a GGUF model (qrecipe/inputs/models.py).

transformers builds a new gguf.GGUFReader for the config, the weights and the tokenizer (four in
all), and each one splits every key/value array into one memory-mapped numpy view per element:
Gemma 3's 262k-token vocabulary is three arrays of 262k elements, and np.memmap's per-view
bookkeeping made each reader take ~20 s, 70 of the 111 s the whole dequantization took on a
2-core CPU (cProfile; the numpy dequantization itself: 7 s). Within `shared_reader()` every
GGUFReader transformers asks for is one reader, built once, that slices a plain ndarray view of
the same mapping (same parts, same tensor data: tests/test_gemma.py; ~4.7 s for Gemma).
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Dict, Iterator

_LOCK = threading.Lock()  # the patch is process-wide: one dequantization at a time


@functools.lru_cache(maxsize=1)
def _fast_reader_class():
    import numpy as np  # deferred: numpy and gguf, only when a GGUF is dequantized
    from gguf import GGUFReader

    class FastReader(GGUFReader):
        """GGUFReader whose small reads slice a plain ndarray, not the np.memmap."""

        def _get(self, offset, dtype, count=1, override_order=None):
            plain = self.__dict__.get("_plain")
            if plain is None:  # the first read, right after __init__ mapped the file
                plain = self._plain = self.data.view(np.ndarray)
            count = int(count)
            arr = plain[offset:offset + np.dtype(dtype).itemsize * count].view(dtype=dtype)[:count]
            order = self.byte_order if override_order is None else override_order
            return arr.view(arr.dtype.newbyteorder(order))

    return FastReader


_ACTIVE: Dict[str, object] = {}  # realpath -> reader, while shared_reader() is active


def fast_reader(path):
    """A FastReader of the GGUF at `path`: within shared_reader() the one it shares."""
    key = os.path.realpath(path)
    if key in _ACTIVE:
        return _ACTIVE[key]
    reader = _fast_reader_class()(path)
    if _LOCK.locked():  # inside shared_reader(): kept for the other readers of the block
        _ACTIVE[key] = reader
    return reader


@contextlib.contextmanager
def shared_reader() -> Iterator[None]:
    """gguf.GGUFReader(path) gives one FastReader per file (read-only) until the block ends."""
    import gguf  # deferred: gguf, only when a GGUF is dequantized

    def reader(path, mode="r"):
        return fast_reader(path) if mode == "r" else original(path, mode)

    _fast_reader_class()  # subclasses the real GGUFReader: made before it is replaced
    with _LOCK:
        original = gguf.GGUFReader
        gguf.GGUFReader = reader  # transformers imports it from gguf at each call
        try:
            yield
        finally:
            gguf.GGUFReader = original
            _ACTIVE.clear()
