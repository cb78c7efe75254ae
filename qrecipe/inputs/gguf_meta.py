"""The few GGUF header values validation needs, read without parsing the whole file.

gguf.GGUFReader maps every tensor and turns each of the ~50k tokenizer strings into numpy
parts: ~2 s for SmolLM2-135M, on every validate. This reads the key/value section only, skipping
arrays by their lengths, and stops once the wanted keys are found (GGUF v2/v3, little-endian).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Reader:
    def __init__(self, f):
        self.f = f

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        return self.f.read(self.unpack("<Q")).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _ARRAY:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            if etype in _SCALARS and not keep:  # fixed-size elements: one seek
                self.f.seek(struct.calcsize(_SCALARS[etype]) * count, 1)
                return None
            items = [self.value(etype, keep) for _ in range(count)]
            return items if keep else None
        raise ValueError(f"unknown GGUF value type {vtype}")


def read_fields(path: Path, wanted: Iterable[str]) -> Optional[Dict[str, Any]]:
    """{key: value} for the wanted keys present in the header ("{arch}" in a key is replaced by
    general.architecture); None for a file this reader does not handle (the caller falls back)."""
    wanted = set(wanted)
    found: Dict[str, Any] = {}
    with open(path, "rb") as f:
        r = _Reader(f)
        if f.read(4) != b"GGUF" or r.unpack("<I") not in (2, 3):
            return None
        r.unpack("<Q")  # tensor count
        for _ in range(r.unpack("<Q")):
            key, vtype = r.string(), r.unpack("<I")
            arch = found.get("general.architecture")
            name = key.replace(f"{arch}.", "{arch}.", 1) if arch and key.startswith(arch) else key
            keep = name in wanted
            value = r.value(vtype, keep)
            if keep:
                found[name] = value
                if wanted <= found.keys():
                    break
    return found
