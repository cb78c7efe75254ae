"""What each backend can do: method x backend x bits x group sizes x device, in one table.

Plain data, no torch: run/validate.py checks a recipe against it before any weight is loaded,
the adapters take their `support` from it, `qrecipe plan` sizes the pairs marked `planned`, and
`markdown_table` renders it for the docs (`qrecipe recipes --capabilities`). The group-size rule
(a group must divide every quantized layer's input width) is `undivided`, for every caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

PER_CHANNEL = -1  # bits.group_size: one group per output channel
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class MethodSupport:
    bits: Tuple[int, ...]
    # The checkpoint format written (QuantizeResult.format): gptq, awq, compressed-tensors,
    # bitsandbytes.
    format: str
    # Group sizes accepted; -1 means per output channel. None: the library fixes it (bnb).
    group_sizes: Optional[Tuple[int, ...]] = (PER_CHANNEL, 32, 64, 128, 256)
    needs_calibration: bool = True
    devices: Tuple[str, ...] = DEVICES
    note: str = ""
    planned: bool = True  # `qrecipe plan` estimates its memory and time


# Widths the GPTQ torch packer, compressed-tensors and the CPU loaders handle; 5-7 bits pack too
# but no GPU kernel or the wider ecosystem reads them.
_INT_BITS = (2, 3, 4, 8)
# gptqmodel's AWQ torch kernel stops at group 128 (its SUPPORTS_GROUP_SIZE). No -1: AWQ is 4-bit
# only there, and 4-bit per-channel checkpoints do not run on CPU (GPTQModelBackend.preflight).
_AWQ_GROUPS = (32, 64, 128)

#: backend -> method -> what it supports. The order is the planner's row order.
CAPABILITIES: Dict[str, Dict[str, MethodSupport]] = {
    "gptqmodel": {
        "gptq": MethodSupport(_INT_BITS, "gptq", note="GPTQ (group-aware reordering unless "
                                                      "desc_act), gptq v1 checkpoint"),
        "awq": MethodSupport((4,), "awq", group_sizes=_AWQ_GROUPS,
                             note="AWQ gemm checkpoint; on CPU: torch kernel and bf16 weights"),
        "rtn": MethodSupport(_INT_BITS, "gptq", needs_calibration=False,
                             note="gptqmodel weight-only RTN (min/max), gptq v1 checkpoint"),
    },
    "llmcompressor": {
        "gptq": MethodSupport(_INT_BITS, "compressed-tensors",
                              note="GPTQModifier, sequential per decoder layer"),
        "awq": MethodSupport(_INT_BITS, "compressed-tensors", planned=False,
                             note="AWQModifier smoothing + QuantizationModifier"),
        "rtn": MethodSupport(_INT_BITS, "compressed-tensors", needs_calibration=False,
                             planned=False,
                             note="QuantizationModifier, min-max round-to-nearest, no data"),
    },
    "bitsandbytes": {
        "bnb": MethodSupport((4, 8), "bitsandbytes", group_sizes=None, needs_calibration=False,
                             note="4 bits: nf4/fp4 in blocks of 64; 8 bits: LLM.int8 per row"),
    },
}

# What each format is, for people (README's table).
FORMAT_LABELS = {"gptq": "GPTQ (AutoGPTQ-compatible)", "awq": "AWQ (AutoAWQ-compatible, GEMM)",
                 "compressed-tensors": "compressed-tensors (vLLM), pack-quantized",
                 "bitsandbytes": "bitsandbytes"}


def backends_for(method: str) -> List[str]:
    """The backends that implement a method, by name."""
    return sorted(b for b, methods in CAPABILITIES.items() if method in methods)


def undivided(group_size: int, widths: Iterable[int]) -> List[int]:
    """The input widths a group size does not divide (sorted, each once): a group must tile
    every quantized layer's input. Per channel (-1, any size <= 0) divides everything."""
    if group_size <= 0:
        return []
    return sorted({w for w in widths if w % group_size})


def dividing(candidates: Iterable[int], widths: Iterable[int]) -> List[int]:
    """The group sizes among `candidates` that divide every width, in the candidates' order."""
    widths = list(widths)
    return [g for g in candidates if not undivided(g, widths)]


def planned_pairs(bits: int, bitsandbytes: bool) -> List[Tuple[str, str]]:
    """(method, backend) pairs `qrecipe plan` sizes at a width: bitsandbytes' formats (int8,
    nf4) or the integer-group formats (w8 ... w2), in the table's order."""
    return [(m, b) for b, methods in CAPABILITIES.items() for m, s in methods.items()
            if s.planned and bits in s.bits and (b == "bitsandbytes") == bitsandbytes]


def markdown_table() -> List[str]:
    """The table as markdown lines (header, rule, one row per method and backend)."""
    out = ["| method | backend | bits | group sizes | calibration | devices | format written |",
           "|---|---|---|---|---|---|---|"]
    for backend, methods in CAPABILITIES.items():
        for method, s in methods.items():
            groups = ("fixed by the library" if s.group_sizes is None
                      else ", ".join(map(str, s.group_sizes)))
            out.append(f"| {method} | {backend} | {', '.join(map(str, s.bits))} | {groups} | "
                       f"{'yes' if s.needs_calibration else 'no'} | {', '.join(s.devices)} | "
                       f"{FORMAT_LABELS[s.format]} |")
    return out
