"""compressed-tensors "pack-quantized" checkpoints (llm-compressor's int weight format) rewritten
into the GPTQ layout, so gptqmodel's int4 kernels (ExLlamaV2, Marlin, Torch) serve them.

Why: transformers 5.17 loads compressed-tensors by decompressing every weight to a dense fp16
matrix, so such a checkpoint decodes exactly as fast as fp16 (docs/benchmarks.md). The two
layouts hold the same integers, so the rewrite is lossless: no value is requantized.

Both pack 32/bits unsigned values per int32, value j of a word at bits [j*bits, (j+1)*bits),
with the same offset (compressed-tensors stores q + 2**(bits-1) for a signed q; its zero points
likewise). What differs is only the orientation:

    compressed-tensors                         GPTQ (gptq_v2: zero points stored as they are)
    weight_packed      [out, in/k]  int32  ->  qweight [in/k, out]       (packed along in)
    weight_scale       [out, groups]       ->  scales  [groups, out]
    weight_zero_point  [out/k, groups] int32 (asymmetric only; symmetric: 2**(bits-1))
                                           ->  qzeros  [groups, out/k]   (packed along out)
    (groups in column order)               ->  g_idx   [in] = i // group_size
Act-order groups (actorder "group", a weight_g_idx) are refused: compressed-tensors' own
unpacking ignores that index, so which order the integers are in is not settled by the file.

gptq_v2, not the v1 most GPTQ files use: v1 stores zero - 1, which cannot hold a zero point of 0
(an asymmetric group whose minimum is its own zero); v2 is read by gptqmodel as it is.

Importing this module imports neither torch nor safetensors: scheme() reads config.json only
(the kernel table's check, qrecipe/kernels/table.py saved_facts). convert() holds the checkpoint's
tensors in RAM while it writes the rewritten file (the quantized size: ~3.9 GB for a 7B model).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from qrecipe.errors import QRecipeError
from qrecipe.kernels import checkpoint_files as files

# Widths whose values never straddle an int32 in either layout (3, 5, 6, 7 bits do in
# compressed-tensors' dense packing, and GPTQ's 3-bit layout is another one).
BITS = (2, 4, 8)


@dataclass(frozen=True)
class Scheme:
    bits: int
    group_size: int  # -1: one group per row (strategy "channel")
    sym: bool


def _unfit(why: str, value: Any = "gptq layout") -> QRecipeError:
    return QRecipeError(f"this compressed-tensors checkpoint cannot run on a GPTQ kernel: {why}",
                        key="hardware.kernel", value=value,
                        hint="use hardware.kernel=compressed or dequantized")


def scheme(saved: Dict[str, Any]) -> Scheme:
    """The one weight scheme of a saved compressed-tensors quantization_config, or a QRecipeError
    saying why this checkpoint cannot be served by a GPTQ kernel."""
    def refuse(why: str, value: Any):
        raise _unfit(why, value)

    groups = [g for g in (saved.get("config_groups") or {}).values() if g.get("weights")]
    if len(groups) != 1:
        refuse(f"{len(groups)} weight schemes (one is converted)", len(groups))
    g = groups[0]
    w = g["weights"]
    fmt = g.get("format") or saved.get("format")
    if fmt != "pack-quantized":
        refuse(f"format {fmt} (pack-quantized is converted)", fmt)
    if g.get("input_activations") or g.get("output_activations"):
        refuse("activations are quantized too (weight-only is converted)", "activations")
    if w.get("type") != "int" or int(w.get("num_bits", 0)) not in BITS:
        refuse(f"{w.get('type')} {w.get('num_bits')}-bit weights (int {BITS} are converted)",
               w.get("num_bits"))
    strategy = w.get("strategy")
    if strategy not in ("group", "channel"):
        refuse(f"strategy {strategy} (group and channel are converted)", strategy)
    if w.get("actorder") == "group":  # g_idx, which compressed-tensors' own unpacking ignores
        refuse("act-order groups (actorder: group)", "actorder=group")
    if (saved.get("sparsity_config") or {}) or (saved.get("transform_config") or {}):
        refuse("sparsity or transforms are configured", "sparsity/transform")
    if saved.get("kv_cache_scheme"):  # a GPTQ config has no place for it: it would be dropped
        refuse("the KV cache is quantized too", "kv_cache_scheme")
    return Scheme(bits=int(w["num_bits"]),
                  group_size=int(w["group_size"]) if strategy == "group" else -1,
                  sym=bool(w.get("symmetric", True)))


def convert_module(t: Dict[str, Any], s: Scheme) -> Dict[str, Any]:
    """One quantized Linear's compressed-tensors tensors -> its GPTQ tensors (qweight, qzeros,
    scales, g_idx), the same integers and scales."""
    import torch
    shape = [int(x) for x in t["weight_shape"].tolist()]
    k = 32 // s.bits
    if len(shape) != 2 or shape[0] % k or shape[1] % k:  # 3-D: fused MoE experts
        raise _unfit(f"a {'x'.join(map(str, shape))} weight does not map onto a GPTQ Linear "
                     f"of whole int32 words at {s.bits} bits")
    out_f, in_f = shape
    scale = t["weight_scale"]
    if s.sym:  # no zero points saved: every one is the offset 2**(bits-1), k of them a word
        word = sum((1 << (s.bits - 1)) << (j * s.bits) for j in range(k))
        zeros = torch.full((out_f // k, scale.shape[1]), word - (word >> 31 << 32),
                           dtype=torch.int32)
    else:
        zeros = t.get("weight_zero_point")  # [out/k, groups]: already packed along out
        if zeros is None or zeros.dtype != torch.int32 or \
                tuple(zeros.shape) != (out_f // k, scale.shape[1]):
            raise _unfit("zero points not packed as int32 [out/k, groups]")
    g_idx = torch.arange(in_f, dtype=torch.int32) // (in_f if s.group_size == -1
                                                     else s.group_size)
    saved = t.get("weight_g_idx")  # act-order "group": refused by scheme(); a file may differ
    if saved is not None and not bool((saved < 0).all()) and not torch.equal(
            saved.to(torch.int32), g_idx):
        raise _unfit("a layer's groups are not in column order (act-order g_idx)")
    return {"qweight": t["weight_packed"].t().contiguous(), "qzeros": zeros.t().contiguous(),
            "scales": scale.t().contiguous(), "g_idx": g_idx}


def gptq_config(s: Scheme, in_block: Optional[List[List[str]]]) -> dict:
    """config.json's quantization_config of the converted checkpoint (groups in column order:
    no desc_act)."""
    return {"quant_method": "gptq", "bits": s.bits, "group_size": s.group_size,
            "sym": s.sym, "desc_act": False, "format": "gptq_v2",
            "checkpoint_format": "gptq_v2", "true_sequential": True,
            **({"modules_in_block_to_quantize": in_block} if in_block else {}),
            "converted_from": "compressed-tensors pack-quantized (qrecipe/kernels/ct_gptq.py)"}


def to_gptq(tensors: Dict[str, Any], s: Scheme) -> Dict[str, Any]:
    """A compressed-tensors checkpoint's tensors with every quantized module in the GPTQ (v2)
    layout; the others as they are."""
    prefixes = sorted(n[: -len(".weight_packed")] for n in tensors if n.endswith(".weight_packed"))
    out = {n: v for n, v in tensors.items()
           if not any(n.startswith(p + ".weight_") for p in prefixes)}
    for p in prefixes:
        mod = {n[len(p) + 1:]: v for n, v in tensors.items() if n.startswith(p + ".weight_")}
        out.update({f"{p}.{n}": v for n, v in convert_module(mod, s).items()})
    return out


def quantized(tensors: Dict[str, Any]) -> List[str]:
    """The modules a GPTQ-layout checkpoint quantizes (those with a qweight), sorted."""
    return sorted(n[: -len(".qweight")] for n in tensors if n.endswith(".qweight"))


def convert(src: Path, dst: Path) -> Path:
    """Write the GPTQ (gptq_v2) form of the compressed-tensors checkpoint in src into dst (one
    model.safetensors, config.json, and links to every other file: tokenizer, generation
    config). Returns dst."""
    src, dst = Path(src), Path(dst)
    conf = json.loads((src / "config.json").read_text())
    s = scheme(conf.get("quantization_config") or {})
    out = to_gptq(files.read_tensors(src), s)
    conf["quantization_config"] = gptq_config(s, _in_block(quantized(out)))
    return files.write(src, dst, out, conf)


def _in_block(prefixes: List[str]) -> Optional[List[List[str]]]:
    """The quantized modules of a decoder block, by their names inside it, when every block
    quantizes the same set (transformers' GPTQ loader then replaces exactly those); None: the
    loader's default, every Linear in every block."""
    per_block: Dict[str, set] = {}
    for p in prefixes:
        where = files.block_of(p)
        if where is None:
            raise _unfit(f"quantized module {p} sits outside the decoder blocks")
        per_block.setdefault(where[0], set()).add(where[1])
    sets = {frozenset(v) for v in per_block.values()}
    if len(sets) != 1:
        raise _unfit("decoder blocks quantize different modules")
    return [sorted(sets.pop())]
