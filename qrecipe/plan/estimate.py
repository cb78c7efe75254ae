"""Bytes of a model in each format, counted from its shape (qrecipe.inputs.shapes): weights,
inference at a context and batch, disk, and peak memory while quantizing with each backend.

Counting rules (the layouts the backends write; checked against real checkpoints in
docs/benchmarks.md, "qrecipe plan: predicted against measured"):
- quantized: the q/k/v/o/gate/up/down linears of every decoder layer. Embeddings, lm_head and
  norms stay in the model's dtype (tied embeddings are one tensor, counted once).
- w2/w3/w4/w8 (GPTQ, AWQ, RTN; gptqmodel's GPTQ layout): packed weights bits/8 bytes a weight,
  per group and output column an fp16 scale and a packed zero point, an int32 g_idx per input.
- nf4: 0.5 byte a weight, one absmax per block of 64 (double quant: 1 byte, plus an fp32 per 256
  blocks; without: fp32). int8 (LLM.int8): 1 byte a weight plus an fp32 scale per output row.
- hqq8/hqq4/hqq3/hqq2 (hqq's layout, HQQ_BITS): see _hqq_linear_bytes; not a row of its own,
  the w-rows carry it as hqq_weights_bytes / hqq_disk_bytes (qrecipe/plan/build.py).
- fp8/w8a8/nvfp4/mxfp4 (llm-compressor's preset schemes, compressed-tensors, PRESET_FORMATS; read
  from their saved tensors): fp8 (dynamic) and w8a8 1 byte a weight plus one scale per output
  channel in the model's dtype (fp8 static/block: one per tensor/128x128 block, fewer); nvfp4
  0.5 byte a weight, an FP8 scale per 16 inputs, two fp32 global scales a linear; mxfp4 0.5 byte
  a weight, an E8M0 byte per 32 inputs. Rows of their own (the capability table's plan_format).
Decimal units: 1 GB = 1e9 bytes.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

from qrecipe.backends.capabilities import format_pairs, planned_pairs
from qrecipe.inputs.shapes import DTYPE_BYTES, ModelShape

FORMATS = ("fp32", "fp16", "int8", "nf4", "w8", "w4", "w3", "w2", "fp8", "w8a8", "nvfp4",
           "mxfp4")
INT_BITS = {"w8": 8, "w4": 4, "w3": 3, "w2": 2}
BNB_BLOCK, BNB_NESTED = 64, 256
TOKENIZER_BYTES_PER_TOKEN = 70  # tokenizer.json per vocab entry (SmolLM2 3.5 MB, Llama-2 1.8 MB)

# Which backends quantize each format (method/backend pairs that `qrecipe plan` times and sizes):
# the capability table's `planned` rows at each width, or on the row they name (plan_format).
METHODS: Dict[str, List[Tuple[str, str]]] = {
    "fp32": [], "fp16": [],
    "int8": planned_pairs(8, bitsandbytes=True), "nf4": planned_pairs(4, bitsandbytes=True),
    **{fmt: planned_pairs(bits, bitsandbytes=False) for fmt, bits in INT_BITS.items()},
    **{fmt: format_pairs(fmt) for fmt in ("fp8", "w8a8", "nvfp4", "mxfp4")},
}

# Resident memory of a CPU run's process before the model is loaded: python, torch,
# transformers, the backend's imports and the tokenizer (measured with psutil after importing
# them on the project's CPU machine, 2026-11-25; docs/benchmarks.md).
CPU_PROCESS_BYTES = {"gptqmodel": 0.68e9, "llmcompressor": 0.58e9, "bitsandbytes": 0.43e9}
# hqq: measured the same way on 2026-12-06 (0.61 GB; bitsandbytes measured 0.61 GB that day too).
CPU_PROCESS_BYTES["hqq"] = 0.61e9
# The hqq layout (qrecipe/backends/hqq, hqq 0.2.8, axis 1), checked against HQQLinear's saved
# state: each group of `group` weights of a row packed (2 and 4 bits four and two to a uint8,
# 8 bits one byte, 3 bits ten to an int32 along the groups), a scale and a zero point per group
# in the compute dtype (the model's), and 68 bytes of hqq's encoded meta per layer. No g_idx.
HQQ_BITS = {"hqq8": 8, "hqq4": 4, "hqq3": 3, "hqq2": 2}
HQQ_META_BYTES = 68
# gptqmodel on CPU under qrecipe: its adapter collects and trims the heap when the per-layer
# checkpoint starts (qrecipe/backends/gptqmodel/collect.py), so what loading left behind (import
# garbage, the source copy of a cast) is back with the OS before the first layer. Fitted to the
# SmolLM2 runs measured after that change (GPTQ bf16 1.11 GB, RTN fp32 0.97-1.0 GB;
# docs/benchmarks.md).
CPU_PROCESS_TRIMMED_BYTES = 0.55e9
# Copies of the hidden state a backend keeps per calibration token while it quantizes one layer.
# The layer's inputs and outputs (2); AWQ also keeps the inputs of each linear group it scales.
# On SmolLM2 (CPU) GPTQ's peak RSS was 44 MB above RTN's for 32 x 512 tokens: about one copy.
# llm-compressor offloads them to the CPU between layers (sequential_offload_device="cpu").
# Methods whose weights GPTQ's solver quantizes (Hessians and its workspace on the layer).
GPTQ_SOLVED = ("gptq", "w8a8")
CALIB_COPIES = {"cuda": {("gptq", "gptqmodel"): 2, ("awq", "gptqmodel"): 6,
                         ("gptq", "llmcompressor"): 0},
                "cpu": {("gptq", "gptqmodel"): 2, ("awq", "gptqmodel"): 6,
                        ("gptq", "llmcompressor"): 2}}


def linears(s: ModelShape) -> List[Tuple[int, int]]:
    """(in_features, out_features) of the quantized linears of one decoder layer."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    h, i = s.hidden, s.intermediate
    return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]


def layer_linear_params(s: ModelShape) -> int:
    return sum(a * b for a, b in linears(s))


# What each backend does with the embedding and lm_head (read in their code, 2026-12): none
# quantizes them. gptqmodel quantizes the decoder layers' linears only (QuantizeConfig.lm_head
# is False; qrecipe never sets it); llm-compressor targets Linear layers with ignore=["lm_head"]
# (qrecipe/backends/llmcompressor/adapter.py); bitsandbytes, through transformers, converts
# Linear layers but skips lm_head and every weight tied to the embedding; hqq skips lm_head.
EMBEDDING_KEPT = ("kept in the model's dtype by every method: gptqmodel (GPTQ, AWQ, RTN) "
                  "quantizes decoder linears only (lm_head=False), llm-compressor ignores "
                  "lm_head, bitsandbytes and hqq skip lm_head and tied weights")


def embedding_params(s: ModelShape) -> int:
    """The embedding and lm_head (one tensor when tied)."""
    return s.vocab * s.hidden * (1 if s.tied else 2)


def other_params(s: ModelShape) -> int:
    """Parameters that no backend quantizes: embeddings, lm_head (unless tied), norms, biases."""
    emb = embedding_params(s)
    norms = (2 * s.layers + 1) * s.hidden
    bias = s.layers * (s.heads + 2 * s.kv_heads) * s.head_dim if s.attention_bias else 0
    return emb + norms + bias


def total_params(s: ModelShape) -> int:
    return s.layers * layer_linear_params(s) + other_params(s)


def _int_linear_bytes(inf: int, outf: int, bits: int, group: int) -> int:
    groups = math.ceil(inf / group) if group > 0 else 1
    return (inf * outf * bits) // 8 + groups * outf * 2 + (groups * outf * bits) // 8 + inf * 4


def _hqq_linear_bytes(inf: int, outf: int, bits: int, group: int, scale_bytes: int) -> int:
    group = group if group > 0 else inf
    groups = inf * outf // group  # hqq reshapes the weight to (groups, group)
    packed = math.ceil(groups / 10) * group * 4 if bits == 3 else inf * outf * bits // 8
    return packed + 2 * groups * scale_bytes + HQQ_META_BYTES


#: llm-compressor's preset formats -> (weight bytes per 2 weights, inputs per scale, scale bytes
#: or None for the model's dtype, fp32 global scales per linear)
PRESET_FORMATS = {"fp8": (2, None, None, 0), "w8a8": (2, None, None, 0),
                  "nvfp4": (1, 16, 1, 2), "mxfp4": (1, 32, 1, 0)}


def _preset_linear_bytes(inf: int, outf: int, fmt: str, dtype_bytes: int) -> int:
    per_two, group, scale, globals_ = PRESET_FORMATS[fmt]
    scales = outf * (math.ceil(inf / group) if group else 1)  # None: one per output channel
    return inf * outf * per_two // 2 + scales * (scale or dtype_bytes) + 4 * globals_


def _nf4_linear_bytes(inf: int, outf: int, double_quant: bool) -> int:
    blocks = math.ceil(inf * outf / BNB_BLOCK)
    absmax = blocks + 4 * math.ceil(blocks / BNB_NESTED) if double_quant else 4 * blocks
    return inf * outf // 2 + absmax


def layer_bytes(s: ModelShape, fmt: str, group: int = 128, double_quant: bool = True) -> int:
    """Bytes of the quantized linears of one decoder layer in `fmt`."""
    ls = linears(s)
    if fmt in ("fp32", "fp16"):
        return layer_linear_params(s) * (4 if fmt == "fp32" else 2)
    if fmt == "int8":
        return sum(a * b + 4 * b for a, b in ls)
    if fmt == "nf4":
        return sum(_nf4_linear_bytes(a, b, double_quant) for a, b in ls)
    if fmt in HQQ_BITS:
        return sum(_hqq_linear_bytes(a, b, HQQ_BITS[fmt], group, DTYPE_BYTES[s.dtype])
                   for a, b in ls)
    if fmt in PRESET_FORMATS:
        return sum(_preset_linear_bytes(a, b, fmt, DTYPE_BYTES[s.dtype]) for a, b in ls)
    return sum(_int_linear_bytes(a, b, INT_BITS[fmt], group) for a, b in ls)


def weights_bytes(s: ModelShape, fmt: str, group: int = 128, double_quant: bool = True) -> int:
    other = 4 if fmt == "fp32" else 2 if fmt == "fp16" else DTYPE_BYTES[s.dtype]
    return s.layers * layer_bytes(s, fmt, group, double_quant) + other_params(s) * other


def act_bytes(s: ModelShape, fmt: str) -> int:
    """Bytes of one activation/KV value: the format's dtype for fp rows, else the model's."""
    return 4 if fmt == "fp32" else 2 if fmt == "fp16" else DTYPE_BYTES[s.dtype]


def kv_cache_bytes(s: ModelShape, fmt: str, context: int, batch: int) -> int:
    return 2 * s.layers * s.kv_heads * s.head_dim * context * batch * act_bytes(s, fmt)


def activation_bytes(s: ModelShape, fmt: str, context: int, batch: int) -> int:
    """Prefill peak (SDPA attention, logits for the last token only as generate computes them):
    residual, normed input and the MLP's three intermediates of every token, fp32 logits, and
    one dequantized linear for quantized kernels that unpack to the compute dtype."""
    b = act_bytes(s, fmt)
    hidden = batch * context * (2 * s.hidden + 3 * s.intermediate) * b
    logits = batch * s.vocab * 4
    unpack = 0 if fmt in ("fp32", "fp16") else max(a * o for a, o in linears(s)) * b
    return hidden + logits + unpack


def inference_bytes(s: ModelShape, fmt: str, context: int, batch: int, group: int = 128) -> int:
    return (weights_bytes(s, fmt, group) + kv_cache_bytes(s, fmt, context, batch)
            + activation_bytes(s, fmt, context, batch))


def disk_bytes(s: ModelShape, fmt: str, group: int = 128) -> int:
    """safetensors hold the same tensors as memory; plus tokenizer and config files."""
    return weights_bytes(s, fmt, group) + s.vocab * TOKENIZER_BYTES_PER_TOKEN + 20_000


def _hessian_bytes(s: ModelShape, method: str, backend: str) -> int:
    """fp32 Hessians alive at once: gptqmodel works through one true-sequential subset at a
    time (q/k/v, o, gate/up, down); llm-compressor accumulates all of a layer's at once."""
    if method != "gptq":
        return 0
    ls = linears(s)
    if backend == "llmcompressor":
        return sum(4 * a * a for a, _ in ls)
    subsets = [ls[0:3], ls[3:4], ls[4:6], ls[6:7]]
    return max(sum(4 * a * a for a, _ in sub) for sub in subsets)


def quantize_work_bytes(s: ModelShape, method: str, backend: str, device: str,
                        num_samples: int, seq_len: int, work_dtype_bytes: int) -> int:
    """Memory of the layer being quantized: its weights (plus an fp32 working copy of the
    largest linear), Hessians and solver workspace, the calibration hidden states the backend
    keeps, and one sample's forward through the layer."""
    ls = linears(s)
    biggest = max(a * b for a, b in ls)
    layer = layer_linear_params(s) * work_dtype_bytes + 4 * biggest
    hess = _hessian_bytes(s, method, backend)
    solve = 8 * max(a * a for a, _ in ls) if method in GPTQ_SOLVED else 0
    copies = CALIB_COPIES[device].get((method, backend), 0)
    calib = num_samples * seq_len * s.hidden * work_dtype_bytes * copies
    one = seq_len * (2 * s.hidden + 3 * s.intermediate) * work_dtype_bytes \
        if method in GPTQ_SOLVED + ("awq", "autoround") else 0
    return layer + hess + solve + calib + one


def quantize_peak_bytes(s: ModelShape, fmt: str, method: str, backend: str, device: str,
                        num_samples: int, seq_len: int, group: int = 128) -> int:
    """Peak while quantizing, on the profile's device: GPU memory allocated (the model itself
    is offloaded to host RAM by gptqmodel and llm-compressor, one layer on the GPU at a time;
    bitsandbytes places the whole quantized model on the GPU), or, on a CPU, the process's
    resident memory (the process itself, the whole model in its load dtype, plus the above)."""
    # GPU profiles quantize in fp16/bf16 (hardware.dtype); a CPU run in the model's dtype.
    work = 2 if device == "cuda" else DTYPE_BYTES[s.dtype]
    if backend == "bitsandbytes":
        biggest = max(s.vocab * s.hidden, max(a * b for a, b in linears(s)))
        quantized = weights_bytes(s, fmt, group)
        if device == "cuda":
            return quantized + biggest * 2
        # CPU: the source checkpoint is memory-mapped while each tensor is quantized in turn
        # (one, the largest, in flight at a time).
        return (int(CPU_PROCESS_BYTES[backend]) + total_params(s) * work + quantized
                + biggest * work)
    layer = quantize_work_bytes(s, method, backend, device, num_samples, seq_len, work)
    if device == "cuda":
        return layer
    if backend == "gptqmodel":  # the load's leftovers are trimmed (CPU_PROCESS_TRIMMED_BYTES)
        return int(CPU_PROCESS_TRIMMED_BYTES) + total_params(s) * work + layer
    # Loaded in another dtype than stored (e.g. a float32 checkpoint in bfloat16): the
    # memory-mapped source stays resident beside the cast copy (measured on SmolLM2 GPTQ bf16
    # before gptqmodel's runs were trimmed: docs/benchmarks.md, issue 10).
    source = total_params(s) * DTYPE_BYTES[s.stored_dtype] if s.stored_dtype else 0
    return int(CPU_PROCESS_BYTES[backend]) + total_params(s) * work + source + layer


def host_bytes(s: ModelShape, backend: str) -> int:
    """Host RAM a GPU run needs: the whole model offloaded in its load dtype (bitsandbytes
    streams it from the checkpoint instead) plus the process."""
    if backend == "bitsandbytes":
        return int(CPU_PROCESS_BYTES[backend]) + max(s.vocab * s.hidden,
                                                     layer_linear_params(s)) * 2
    return int(CPU_PROCESS_BYTES[backend]) + total_params(s) * 2
