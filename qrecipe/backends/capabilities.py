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
    # compressed-tensors' own name of the layout, where a method writes another than the
    # format's usual one (FORMAT_LABELS): float-quantized, int-quantized, nvfp4-pack-quantized
    layout: str = ""
    # The `qrecipe plan` row that sizes it where its bytes are not the integer-group layout of
    # its width (qrecipe/plan/estimate.py PRESET_FORMATS): fp8, w8a8, nvfp4, mxfp4.
    plan_format: str = ""
    # Whether its quantize time grows with the calibration tokens (qrecipe/plan/times.py scales
    # a measured time by them). None: as needs_calibration. AutoRound: no, it tunes a fixed
    # number of steps (iterations x its batch of 8 rows) whatever the rows.
    time_grows_with_rows: Optional[bool] = None


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
        "awq": MethodSupport(_INT_BITS, "compressed-tensors",
                             note="AWQModifier smoothing + QuantizationModifier"),
        "rtn": MethodSupport(_INT_BITS, "compressed-tensors", needs_calibration=False,
                             planned=False,
                             note="QuantizationModifier, min-max round-to-nearest, no data"),
        # Weight-and-activation and float schemes: compressed-tensors presets whose width and
        # grouping the scheme fixes (bits.width must name it; FP4's group is the format's own).
        # Calibrated where a scheme has static scales; the adapter drops the rows for the
        # data-free ones (fp8 dynamic/block). CPU reload: weights decompressed to dense,
        # activations quantized in forward (kernel `emulated`, qrecipe/kernels/table.py).
        "fp8": MethodSupport((8,), "compressed-tensors", group_sizes=None,
                             layout="float-quantized", plan_format="fp8",
                             time_grows_with_rows=False,  # the default scheme reads no rows
                             note="FP8 W8A8 (method.scheme: dynamic per-channel/per-token, no "
                                  "data; static per-tensor, calibrated; block 128x128)"),
        "w8a8": MethodSupport((8,), "compressed-tensors", group_sizes=(PER_CHANNEL,),
                              layout="int-quantized", plan_format="w8a8",
                              note="SmoothQuantModifier + GPTQModifier W8A8: int8 per-channel "
                                   "weights, int8 per-token dynamic activations"),
        "autoround": MethodSupport(_INT_BITS, "compressed-tensors", time_grows_with_rows=False,
                                   note="AutoRoundModifier (auto-round's SignSGD rounding), "
                                        "int weight-only"),
        "nvfp4": MethodSupport((4,), "compressed-tensors", group_sizes=(16,),
                               layout="nvfp4-pack-quantized", plan_format="nvfp4",
                               note="NVFP4: FP4 E2M1 in groups of 16 with FP8 scales and a "
                                    "global scale; no Hopper kernel (Blackwell)"),
        "mxfp4": MethodSupport((4,), "compressed-tensors", group_sizes=(32,),
                               needs_calibration=False, layout="mxfp4-pack-quantized",
                               plan_format="mxfp4",
                               note="MXFP4: FP4 E2M1 in groups of 32 with E8M0 scales; no "
                                    "Hopper kernel (Blackwell)"),
    },
    "bitsandbytes": {
        "bnb": MethodSupport((4, 8), "bitsandbytes", group_sizes=None, needs_calibration=False,
                             note="4 bits: nf4/fp4 in blocks of 64; 8 bits: LLM.int8 per row"),
    },
    # hqq 0.2.8: any group that is a multiple of 8 (its BaseQuantizeConfig asserts it) and
    # divides the layer; -1 is its group_size=None (one group per output row). `qrecipe plan`
    # times it on the w-rows, which carry the hqq layout's bytes beside the GPTQ layout's
    # (hqq_weights_bytes: qrecipe/plan/build.py).
    "hqq": {
        "hqq": MethodSupport(_INT_BITS, "hqq", group_sizes=(PER_CHANNEL, 16, 32, 64, 128, 256),
                             needs_calibration=False,
                             note="Half-Quadratic Quantization (no data), hqq's HQQLinear "
                                  "layers saved in safetensors"),
    },
}

# What each format is, for people (README's table).
FORMAT_LABELS = {"gptq": "GPTQ (AutoGPTQ-compatible)", "awq": "AWQ (AutoAWQ-compatible, GEMM)",
                 "compressed-tensors": "compressed-tensors (vLLM), pack-quantized",
                 "bitsandbytes": "bitsandbytes",
                 "hqq": "HQQ (hqq's HQQLinear state, transformers' hqq quantization_config)"}


# `method.backend: auto`: the backend that quantizes a method fastest on each device. AWQ:
# llm-compressor, which is also AWQ's default (conf/method/awq.yaml). On a GPU 3.46 s against
# gptqmodel's 13.54 s per 7B layer (H200, docs/benchmarks.md "GPU: quantize time against each
# library's defaults, 1 layer"); on all 32 layers of that shape on an H100 (128 x 512 rows,
# h100_80gb) 107-149 s against gptqmodel's 7.3 min (docs/compare.md "GPU: the newer methods");
# 68.5-76.3 s with the 80 GB profiles' placement (docs/benchmarks.md). On a CPU
# (SmolLM2, 8 x 512 rows, docs/benchmarks.md "AWQ by backend (CPU)"): in bf16 87-105 s against
# 567 s of quantize at perplexity 37.71 against 37.24 (the recipe's tolerance is 0.5), 112.1 MB
# both; in fp32 183 s at 37.24, the same perplexity, 169.3 MB (unquantized tensors in fp32).
AUTO_BACKEND: Dict[Tuple[str, str], str] = {("awq", "cuda"): "llmcompressor",
                                           ("awq", "cpu"): "llmcompressor"}


def auto_backend(method: str, device: str) -> Optional[str]:
    """What `method.backend: auto` means for this method on this device: the measured choice,
    or the only backend that has the method; None when neither says."""
    if (method, device) in AUTO_BACKEND:
        return AUTO_BACKEND[(method, device)]
    found = backends_for(method)
    return found[0] if len(found) == 1 else None


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
    nf4) or the integer-group formats (w8 ... w2), in the table's order; methods with a plan
    row of their own (plan_format) are not among them."""
    return [(m, b) for b, methods in CAPABILITIES.items() for m, s in methods.items()
            if s.planned and not s.plan_format and bits in s.bits
            and (b == "bitsandbytes") == bitsandbytes]


def format_pairs(plan_format: str) -> List[Tuple[str, str]]:
    """(method, backend) pairs sized by a plan row of their own (fp8, w8a8, nvfp4, mxfp4)."""
    return [(m, b) for b, methods in CAPABILITIES.items() for m, s in methods.items()
            if s.planned and s.plan_format == plan_format]


def plan_format(method: str) -> str:
    """The plan row of a method that has one of its own, else "" (the row of its width)."""
    return next((s.plan_format for methods in CAPABILITIES.values()
                 for m, s in methods.items() if m == method and s.plan_format), "")


def time_grows_with_rows(method: str, backend: str) -> bool:
    """Whether a method's quantize time scales with the calibration tokens (plan/times.py);
    False for a pair the table does not have."""
    s = CAPABILITIES.get(backend, {}).get(method)
    if s is None:
        return False
    return s.needs_calibration if s.time_grows_with_rows is None else s.time_grows_with_rows


def markdown_table() -> List[str]:
    """The table as markdown lines (header, rule, one row per method and backend)."""
    out = ["| method | backend | bits | group sizes | calibration | devices | format written |",
           "|---|---|---|---|---|---|---|"]
    for backend, methods in CAPABILITIES.items():
        for method, s in methods.items():
            groups = ("fixed by the library" if s.group_sizes is None
                      else ", ".join(map(str, s.group_sizes)))
            label = (f"{FORMAT_LABELS[s.format].split(',')[0]}, {s.layout}" if s.layout
                     else FORMAT_LABELS[s.format])
            out.append(f"| {method} | {backend} | {', '.join(map(str, s.bits))} | {groups} | "
                       f"{'yes' if s.needs_calibration else 'no'} | {', '.join(s.devices)} | "
                       f"{label} |")
    return out
