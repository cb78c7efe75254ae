"""A GGUF file's header as the config.json keys the shape reader (qrecipe/inputs/shapes.py) reads:
widths, layers, heads, vocabulary, whether the output head is tied and the attention has biases.

gguf.GGUFReader maps every tensor and turns each of the ~50k tokenizer strings into numpy
parts: ~2 s for SmolLM2-135M. This reads the key/value section and the tensor names only,
skipping arrays by their lengths (~50 ms; GGUF v2/v3, either byte order), and gives the same
dict (tests/test_gguf_meta.py). It is also the bounds check of a GGUF from outside, run by
validation before transformers' own GGUF reader sees the file: every length is checked against
a limit before anything is read or allocated (a string of 2^40 bytes, 2^40 array elements,
unknown value types, a header cut short), and a file it refuses is one QRecipeError naming the
config key, never a MemoryError, OverflowError or traceback, and never handed to another reader.
"""
from __future__ import annotations

import os
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qrecipe.errors import QRecipeError

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?",
            10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
VERSIONS = (2, 3)
# Limits far above any real model (SmolLM2: 49k tokenizer strings of < 100 bytes, 273 tensors,
# 35 key/values; the largest models: ~260k tokens, ~100k tensors).
MAX_STRING = 1 << 20  # bytes of one string
MAX_ARRAY = 10_000_000  # elements of one array
MAX_WHOLE = 65_536  # elements of an array read whole (the KEYS: one value per layer)
MAX_NESTING = 4  # arrays of arrays
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
MAX_DIMS = 8  # ggml tensors have at most 4

# config.json key -> GGUF key ("{arch}" is general.architecture)
KEYS = {"hidden_size": "{arch}.embedding_length",
        "intermediate_size": "{arch}.feed_forward_length",
        "num_hidden_layers": "{arch}.block_count",
        "num_attention_heads": "{arch}.attention.head_count",
        "num_key_value_heads": "{arch}.attention.head_count_kv",
        "head_dim": "{arch}.attention.key_length",
        "vocab_size": "{arch}.vocab_size",
        "num_local_experts": "{arch}.expert_count"}
TOKENS = "tokenizer.ggml.tokens"  # its length is the vocabulary when vocab_size is absent
_WHOLE = set(KEYS.values())

Header = Tuple[Dict[str, Any], List[str]]  # ({key: value}, tensor names)


class _Refused(Exception):
    """A header this reader will not read; read_header turns it into one QRecipeError."""


class _Reader:
    def __init__(self, f, order: str = "<"):
        self.f, self.order = f, order  # "<" little-endian, ">" big-endian

    def unpack(self, fmt: str):
        size = struct.calcsize(self.order + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise _Refused("truncated: the file ends inside its header")
        return struct.unpack(self.order + fmt, data)[0]

    def count(self, fmt: str, limit: int, what: str) -> int:
        n = self.unpack(fmt)
        if n > limit:
            raise _Refused(f"{what} of {n} is beyond the limit of {limit}")
        return n

    def string(self, keep: bool = True) -> Any:
        n = self.count("Q", MAX_STRING, "a string length")
        if not keep:
            self.f.seek(n, 1)
            return None
        data = self.f.read(n)
        if len(data) != n:
            raise _Refused("truncated: the file ends inside its header")
        return data.decode("utf-8", errors="replace")

    def value(self, vtype: int, whole: bool = True) -> Any:
        """The value; an array's length unless `whole`."""
        if vtype == _STRING:
            return self.string()
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _ARRAY:
            etype = self.unpack("I")
            if whole:
                count = self.count("Q", MAX_WHOLE, f"a per-layer array ({etype}) length")
                if etype == _ARRAY:
                    raise _Refused("a per-layer value that is an array of arrays")
                return [self.value(etype) for _ in range(count)]
            count = self.count("Q", MAX_ARRAY, "an array length")
            self.skip(etype, count)
            return count
        raise _Refused(f"unknown value type {vtype}")

    def skip(self, etype: int, count: int, depth: int = 1) -> None:
        if etype in _SCALARS:  # fixed-size elements: one seek
            self.f.seek(struct.calcsize(self.order + _SCALARS[etype]) * count, 1)
        elif etype == _STRING:
            for _ in range(count):
                self.string(keep=False)
        elif etype == _ARRAY:
            if depth >= MAX_NESTING:
                raise _Refused(f"arrays nested deeper than {MAX_NESTING}")
            for _ in range(count):
                inner = self.unpack("I")
                self.skip(inner, self.count("Q", MAX_ARRAY, "an array length"), depth + 1)
        else:
            raise _Refused(f"unknown value type {etype}")

    def tensor(self) -> Tuple[str, int]:
        """A tensor's name and its data's offset (from the start of the data section)."""
        name = self.string()
        dims = self.count("I", MAX_DIMS, "a tensor's dimension count")
        self.f.seek(8 * dims + 4, 1)  # dims (u64 each), ggml type (u32)
        return name, self.unpack("Q")


def read_header(path: Path, key: str = "model.path") -> Header:
    """Every scalar and string of the key/value section ({arch} in keys replaced), each array's
    length (the whole array for the KEYS, which some models give per layer), and the tensor
    names; a QRecipeError naming `key` for a file that is not a GGUF this reader reads."""
    try:
        with open(path, "rb") as f:
            return _read(f, os.fstat(f.fileno()).st_size)
    except _Refused as e:
        raise QRecipeError(f"not a readable GGUF header ({e})", key=key, value=str(path)) from None
    except OSError as e:
        raise QRecipeError(f"cannot read the GGUF file ({e.strerror})", key=key,
                           value=str(path)) from None


def _read(f, size: int) -> Header:
    magic = f.read(4)
    if magic != b"GGUF":
        raise _Refused(f"starts with {magic!r}, not b'GGUF'")
    r = _Reader(f)
    version = r.unpack("I")
    if version & 0xFFFF == 0:  # written big-endian (what GGUFReader also detects this way)
        r.order, version = ">", int.from_bytes(version.to_bytes(4, "little"), "big")
    if version not in VERSIONS:
        raise _Refused(f"version {version}; versions {VERSIONS} are read")
    n_tensors = r.count("Q", MAX_TENSORS, "a tensor count")
    n_kv = r.count("Q", MAX_KV, "a key/value count")
    found: Dict[str, Any] = {}
    for _ in range(n_kv):
        key = _generic(r.string(), found.get("general.architecture"))
        found[key] = r.value(r.unpack("I"), key in _WHOLE)
    tensors = [r.tensor() for _ in range(n_tensors)]
    _check_data(found, tensors, f.tell(), size)
    return found, [name for name, _ in tensors]


def _check_data(found: Dict[str, Any], tensors: List[Tuple[str, int]], end: int,
                size: int) -> None:
    """The header ends inside the file and every tensor's data starts inside it (a file cut
    short in its data section is refused here, not halfway through dequantizing)."""
    align = found.get("general.alignment", 32)
    if not isinstance(align, int) or isinstance(align, bool) or not 0 < align <= MAX_STRING:
        raise _Refused(f"general.alignment {align!r} is not a positive integer")
    data = -(-end // align) * align
    last = max((offset for _, offset in tensors), default=0)
    if end > size or (tensors and data + last >= size):
        raise _Refused(f"truncated: tensor data would start at byte {data + last}, the file "
                       f"has {size}")


def _generic(key: str, arch: Optional[str]) -> str:
    return key.replace(f"{arch}.", "{arch}.", 1) if arch and key.startswith(f"{arch}.") else key


@lru_cache(maxsize=8)  # plan and its run comparison read the same file more than once
def _config(path: str, size: int, mtime_ns: int, key: str) -> Dict[str, Any]:
    return config_of(*read_header(Path(path), key), key=key, path=path)


def read_config(path: Path, key: str = "model.path") -> Dict[str, Any]:
    """The header of the GGUF file at `path` as config.json keys (see config_of)."""
    st = Path(path).stat()
    return dict(_config(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, key))


def config_of(fields: Dict[str, Any], tensors: List[str], key: str = "model.path",
              path: str = "") -> Dict[str, Any]:
    """GGUF key/values and tensor names -> config.json keys. transformers dequantizes a GGUF to
    float32 (qrecipe's materialize does exactly that): its unquantized dtype is float32."""
    arch = fields.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise QRecipeError("the GGUF header has no general.architecture string", key=key,
                           value=path)
    conf: Dict[str, Any] = {"model_type": arch, "architectures": [arch],
                            "torch_dtype": "float32",
                            "tie_word_embeddings": "output.weight" not in tensors,
                            "attention_bias": "blk.0.attn_q.bias" in tensors}
    for ckey, gkey in KEYS.items():
        v = fields.get(gkey)
        conf[ckey] = v[0] if isinstance(v, list) and v else v  # per layer: the first
    if conf["vocab_size"] is None:  # set (None) by the loop above: setdefault would keep it
        conf["vocab_size"] = fields.get(TOKENS)
    return {k: v for k, v in conf.items() if v is not None}
