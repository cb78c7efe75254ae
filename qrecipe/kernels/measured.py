"""Decode speed per kernel as measured, so `hardware.kernel=auto` on a GPU picks the fastest
kernel that fits a checkpoint rather than a fixed preference order.

The figures live in kernels/measured.json, written by benchmarks/kernel_speed.py (its command,
date, GPU and versions are inside): one row per (GPU, checkpoint format, symmetry, kernel) with
decode tokens/s at batch 1 and 8 against fp16 on the same model. Why measure rather than rank by
reputation: on the 32-layer Llama-2-7B shape on an H100, gptqmodel's Marlin decoded a symmetric
GPTQ checkpoint at 1.48x fp16 and ExLlamaV2 at 2.04x, although Marlin is the kernel usually
preferred on cc >= 8.0.

`ranked` orders the kernels `auto` may try: the ones measured for this format and symmetry on
the nearest measured GPU (the same compute capability first), fastest at batch 1 first (batch 8
breaks ties), then every unmeasured one in the table's own order. Plain data: no torch.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

MEASURED = Path(__file__).with_name("measured.json")


@lru_cache(maxsize=1)
def table() -> Dict[str, Any]:
    """The measured table: {"source": {...}, "rows": [...]}; empty when none is shipped."""
    try:
        return json.loads(MEASURED.read_text())
    except FileNotFoundError:
        return {"source": {}, "rows": []}


def _rows(fmt: str, sym: Optional[bool], cc: Optional[float]) -> List[Dict[str, Any]]:
    """The rows of fmt (and sym, where the checkpoint's is known) on the measured GPU nearest
    to cc (None: the newest measured): an sm_86 card takes an A100's (8.0) figures over an
    H100's (9.0)."""
    rows = [r for r in table()["rows"] if r["format"] == fmt
            and (sym is None or r.get("sym") is None or r["sym"] == sym)]
    if not rows:
        return []
    here = max(r["cc"] for r in rows) if cc is None else cc
    # the same architecture generation (major cc) first, then the closest cc
    nearest = min({r["cc"] for r in rows}, key=lambda c: (int(c) != int(here), abs(c - here), -c))
    return [r for r in rows if r["cc"] == nearest]


def ranked(fmt: str, sym: Optional[bool], cc: Optional[float],
           names: Sequence[str]) -> Tuple[str, ...]:
    """names (kernels auto may try, in the table's order) with the measured ones first, fastest
    first."""
    speed = {r["kernel"]: (r["b1_vs_fp16"], r["b8_vs_fp16"] or 0.0) for r in _rows(fmt, sym, cc)}
    measured = sorted((n for n in names if n in speed), key=lambda n: speed[n], reverse=True)
    return tuple(measured) + tuple(n for n in names if n not in speed)


def alternatives(fmt: str, sym: Optional[bool], cc: Optional[float]) -> List[Dict[str, Any]]:
    """What was measured for this checkpoint's kind on the nearest GPU, fastest first: the
    report names the kernel chosen and these."""
    rows = sorted(_rows(fmt, sym, cc), key=lambda r: (r["b1_vs_fp16"], r["b8_vs_fp16"] or 0.0),
                  reverse=True)
    return [{k: r.get(k) for k in ("kernel", "gpu", "b1_vs_fp16", "b8_vs_fp16")} for r in rows]
