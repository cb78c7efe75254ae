"""Decode speed per kernel as measured, so `hardware.kernel=auto` on a GPU picks the fastest
kernel that fits a checkpoint rather than a fixed preference order.

The figures live in kernels/measured.json, written by benchmarks/kernel_speed.py (each
measurement's command, date, GPU, dtype and versions are inside): one row per (GPU, model dtype,
checkpoint format, symmetry, kernel) with decode tokens/s at batch 1 and 8 against the fp model
in the same dtype. Why measure rather than rank by reputation: on the 32-layer Llama-2-7B shape
on an H100 in float16 a compressed-tensors int4 checkpoint decodes fastest dense (1.00x fp16)
and an asymmetric GPTQ one on the torch kernel (0.45x). Only measurements the speed step checked
belong here: ExLlamaV2's graph-timed rows were dropped (the table's `left_out` says why).

`ranked` orders the kernels `auto` may try: the ones measured for this format and symmetry on
the nearest measured GPU (the same compute capability first; one card of it, never a mix) in
the job's dtype (float16's figures where that dtype was not measured), fastest at batch 1 first
(batch 8 breaks ties), then every unmeasured one in the table's own order. Plain data: no
torch.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

MEASURED = Path(__file__).with_name("measured.json")
# The dtype whose figures stand in for a dtype nobody measured (the table's reference).
REFERENCE_DTYPE = "float16"


@lru_cache(maxsize=1)
def table() -> Dict[str, Any]:
    """The measured table: {"sources": [{...}], "rows": [...]}; empty when none is shipped."""
    try:
        return json.loads(MEASURED.read_text())
    except FileNotFoundError:
        return {"sources": [], "rows": []}


def _rows(fmt: str, sym: Optional[bool], cc: Optional[float], dtype: Optional[str] = None,
          bits: Optional[int] = None) -> List[Dict[str, Any]]:
    """The rows of fmt (and sym and bits, where the checkpoint's are known) on the measured GPU
    nearest to cc (None: the newest measured): an sm_86 card takes an A100's (8.0) figures over
    an H100's (9.0); of one dtype: dtype's where measured, else REFERENCE_DTYPE's (a row without
    a dtype counts as that)."""
    rows = [r for r in table()["rows"] if r["format"] == fmt
            and (sym is None or r.get("sym") is None or r["sym"] == sym)
            and (bits is None or r.get("bits") is None or r["bits"] == bits)]
    if not rows:
        return []
    here = max(r["cc"] for r in rows) if cc is None else cc
    # the same architecture generation (major cc) first, then the closest cc
    nearest = min({r["cc"] for r in rows}, key=lambda c: (int(c) != int(here), abs(c - here), -c))
    rows = [r for r in rows if r["cc"] == nearest]
    have = {r.get("dtype", REFERENCE_DTYPE) for r in rows}
    pick = dtype if dtype in have else REFERENCE_DTYPE if REFERENCE_DTYPE in have else min(have)
    rows = [r for r in rows if r.get("dtype", REFERENCE_DTYPE) == pick]
    # one GPU's figures, never a mix (an H100 and an H200 are both 9.0): ratios from two cards
    # do not rank against each other; the GPU with the most kernels measured, then by name
    gpus = {r["gpu"] for r in rows}
    gpu = max(gpus, key=lambda g: (sum(r["gpu"] == g for r in rows), g))
    return [r for r in rows if r["gpu"] == gpu]


def ranked(fmt: str, sym: Optional[bool], cc: Optional[float], names: Sequence[str],
           dtype: Optional[str] = None, bits: Optional[int] = None) -> Tuple[str, ...]:
    """names (kernels auto may try, in the table's order) with the measured ones first, fastest
    first."""
    speed = {r["kernel"]: (r["b1_vs_fp16"], r["b8_vs_fp16"] or 0.0)
             for r in _rows(fmt, sym, cc, dtype, bits)}
    measured = sorted((n for n in names if n in speed), key=lambda n: speed[n], reverse=True)
    return tuple(measured) + tuple(n for n in names if n not in speed)


def alternatives(fmt: str, sym: Optional[bool], cc: Optional[float],
                 dtype: Optional[str] = None, bits: Optional[int] = None) -> List[Dict[str, Any]]:
    """What was measured for this checkpoint's kind on the nearest GPU, fastest first: the
    report names the kernel chosen and these."""
    rows = sorted(_rows(fmt, sym, cc, dtype, bits),
                  key=lambda r: (r["b1_vs_fp16"], r["b8_vs_fp16"] or 0.0), reverse=True)
    return [{"kernel": r.get("kernel"), "gpu": r.get("gpu"),
             "dtype": r.get("dtype", REFERENCE_DTYPE), "b1_vs_fp16": r.get("b1_vs_fp16"),
             "b8_vs_fp16": r.get("b8_vs_fp16")} for r in rows]
