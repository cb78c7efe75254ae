"""A safetensors file's header: 8 bytes of length (little-endian), then that much JSON naming
each tensor's dtype, shape and byte range. No torch: `qrecipe plan` reads through here too."""
from __future__ import annotations

import json
import struct
from typing import Tuple

# safetensors' float dtypes and their bytes per element
FLOAT_WIDTHS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def read_header(f) -> Tuple[int, dict]:
    """(the JSON's length, the header) of the open binary file f, read from its start."""
    n = struct.unpack("<Q", f.read(8))[0]
    return n, json.loads(f.read(n))
