"""A safetensors file's header: 8 bytes of length (little-endian), then that much JSON naming
each tensor's dtype, shape and byte range. No torch: `qrecipe plan` reads through here too."""
from __future__ import annotations

import json
import struct
from typing import Optional, Tuple

# safetensors' float dtypes and their bytes per element
FLOAT_WIDTHS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def read_header(f, limit: Optional[int] = None) -> Tuple[int, dict]:
    """(the JSON's length, the header) of the open binary file f, read from its start. limit:
    the most header bytes to believe (a file from outside: its size, a cap); ValueError beyond
    it or for a file shorter than the length field."""
    head = f.read(8)
    if len(head) < 8:
        raise ValueError("shorter than a header")
    n = struct.unpack("<Q", head)[0]
    if limit is not None and n > limit:
        raise ValueError("header length beyond the file")
    return n, json.loads(f.read(n))
