"""4-bit GPTQ checkpoints (and compressed-tensors ones, through ct_gptq) rewritten into AWQ's GEMM
layout at load, so gptqmodel's AWQ Marlin kernel serves them.

Why: gptqmodel's GPTQ Marlin takes no zero points, so an asymmetric GPTQ checkpoint (qrecipe's
default) decodes on the torch kernel at batch 1 (0.45x fp16 on an H100: docs/benchmarks.md), and
a compressed-tensors int4 one dense (1.00x). AWQ Marlin takes zero points (1.48x on an AWQ
checkpoint of the same shape). Both formats mean the same weights, w = (q - z) * s per group of
input columns, so the rewrite moves integers and copies scales: no value is requantized.

    GPTQ (4 bits)                                 AWQ GEMM (4 bits)
    qweight [in/8, out] int32, 8 rows a word  ->  qweight [in, out/8], 8 columns a word,
                                                  column 8j + AWQ_ORDER[k] in nibble k
    qzeros [groups, out/8], natural order     ->  qzeros [groups, out/8], AWQ_ORDER
           (v1 files store z - 1, packed)
    scales [groups, out]                      ->  scales [groups, out] (the same tensor)
    g_idx [in] = i // group_size              ->  none: AWQ groups are in column order
Act-order checkpoints (desc_act, or a g_idx out of column order) are refused: AWQ has no g_idx.

gptqmodel's v1 format (`checkpoint_format: gptq`) stores every zero point minus one, subtracted
from the packed int32 word (a zero point of 0 borrows from its neighbour); adding 0x11111111 to
the word undoes exactly that (gptqmodel's own convert_gptq_v1_to_v2_format does the same).

Importing this module imports neither torch nor safetensors: scheme() reads config.json only.
convert() holds the checkpoint's tensors in RAM (as ct_gptq does) and repacks one module at a
time on `device`, the one the model loads onto.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from qrecipe.errors import QRecipeError
from qrecipe.kernels import checkpoint_files as files
from qrecipe.kernels import ct_gptq

BITS = 4  # AWQ Marlin's one width in gptqmodel 7.6 for zero-point checkpoints
# gptqmodel's AWQ packing order of 8 nibbles (quantization/awq/utils/packing_utils.py AWQ_ORDER)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_V1_OFFSET = 0x11111111  # one added to each of a word's 8 zero points (v1 -> v2)


@dataclass(frozen=True)
class Scheme:
    group_size: int  # -1: one group per row
    sym: bool
    v1: bool  # zero points stored minus one (gptqmodel's v1 / `gptq` checkpoint format)


def _unfit(why: str, value: Any = "awq layout") -> QRecipeError:
    return QRecipeError(f"this checkpoint cannot run on an AWQ kernel: {why}",
                        key="hardware.kernel", value=value,
                        hint="use hardware.kernel=auto or a kernel of the checkpoint's own format")


def scheme(saved: Dict[str, Any]) -> Scheme:
    """The scheme of a saved GPTQ or compressed-tensors quantization_config, or a QRecipeError
    saying why an AWQ kernel cannot serve it."""
    if str(saved.get("quant_method", "")).lower() == "compressed-tensors":
        s = ct_gptq.scheme(saved)  # its own refusals: activations, act-order, sparsity...
        if s.bits != BITS:
            raise _unfit(f"{s.bits}-bit weights ({BITS} are rewritten)", s.bits)
        return Scheme(group_size=s.group_size, sym=s.sym, v1=False)  # ct_gptq writes v2
    bits = int(saved.get("bits", 0))
    if bits != BITS:
        raise _unfit(f"{bits}-bit weights ({BITS} are rewritten)", bits)
    if saved.get("desc_act"):
        raise _unfit("act-order (desc_act: true): AWQ groups are in column order", "desc_act")
    fmt = saved.get("checkpoint_format") or saved.get("format") or "gptq"
    if fmt not in ("gptq", "gptq_v2"):
        raise _unfit(f"checkpoint format {fmt} (gptq and gptq_v2 are rewritten)", fmt)
    return Scheme(group_size=int(saved.get("group_size", -1)), sym=bool(saved.get("sym", True)),
                  v1=fmt == "gptq")


# The repack works on bytes: an int32 word's 8 nibbles are its 4 little-endian bytes' low and
# high halves, so unpacking and packing are uint8 masks and shifts over views of the tensors.
# 8 layers of the 7B shape on a 2-core CPU: 2.8 s, against 19.8 s with int64 shifts and sums.
_LITTLE_ENDIAN = sys.byteorder == "little"


def _nibbles(words):
    """int32 [..., n] -> uint8 [..., n, 8]: nibble k (bits 4k..4k+3) of each word."""
    import torch
    b = words.contiguous().view(torch.uint8).reshape(*words.shape, 4)
    return torch.stack((b & 15, b >> 4), dim=-1).reshape(*words.shape, 8)


def _words(nib, order=tuple(range(8))):
    """uint8 [..., n, 8] values in 0..15 -> int32 [..., n]: value order[k] in nibble k."""
    import torch
    b = torch.stack([nib[..., order[2 * i]] | (nib[..., order[2 * i + 1]] << 4)
                     for i in range(4)], dim=-1)  # byte i: nibbles 2i (low) and 2i + 1
    return b.view(torch.int32).reshape(nib.shape[:-1])


def _unpack_rows(qweight):
    """GPTQ's qweight [in/8, out] -> [in, out] values: row 8r + k is nibble k of word row r."""
    return _nibbles(qweight).permute(0, 2, 1).reshape(qweight.shape[0] * 8, qweight.shape[1])


def _unpack_cols(qzeros):
    """GPTQ's qzeros [groups, out/8] -> [groups, out] values: column 8j + k is nibble k."""
    return _nibbles(qzeros).reshape(qzeros.shape[0], qzeros.shape[1] * 8)


def _pack_awq(vals):
    """[rows, cols] values in 0..15 -> [rows, cols/8] int32 words in AWQ's order (nibble k of
    word j: column 8j + AWQ_ORDER[k])."""
    rows, cols = vals.shape
    return _words(vals.reshape(rows, cols // 8, 8), AWQ_ORDER)


def convert_module(t: Dict[str, Any], s: Scheme, device: str = "cpu") -> Dict[str, Any]:
    """One quantized Linear's GPTQ tensors (qweight, qzeros, scales, g_idx) -> its AWQ GEMM
    tensors (qweight, qzeros, scales), computed on `device`, returned on the CPU."""
    import torch
    if not _LITTLE_ENDIAN:
        raise _unfit("a big-endian host (the repack reads words as little-endian bytes)")
    qweight, qzeros, scales = (t[n].to(device) for n in ("qweight", "qzeros", "scales"))
    in_f, out_f = qweight.shape[0] * 8, qweight.shape[1]
    if out_f % 8 or qzeros.shape != (scales.shape[0], out_f // 8):
        raise _unfit(f"a {in_f}x{out_f} layer does not map onto whole AWQ words")
    g_idx = t.get("g_idx")
    if g_idx is not None:
        size = in_f if s.group_size == -1 else s.group_size
        want = torch.arange(in_f, dtype=torch.int32) // size
        if not torch.equal(g_idx.to(torch.int32).cpu(), want):
            raise _unfit("a layer's groups are not in column order (act-order g_idx)")
    if s.v1:  # the packed "minus one" undone word by word (see the module docstring)
        qzeros = qzeros + _V1_OFFSET  # int32 wraps: exactly the inverse of v1's subtraction
    weights, zeros = _unpack_rows(qweight), _unpack_cols(qzeros)  # [in, out], [groups, out]
    return {"qweight": _pack_awq(weights).cpu(), "qzeros": _pack_awq(zeros).cpu(),
            "scales": scales.cpu().contiguous()}


def awq_config(s: Scheme, keep: List[str]) -> dict:
    """config.json's quantization_config of the rewritten checkpoint; keep: the 2-D weights of
    the decoder blocks left unquantized, which the AWQ loader must not replace."""
    return {"quant_method": "awq", "bits": BITS, "group_size": s.group_size,
            "zero_point": True, "version": "gemm", "modules_to_not_convert": keep or None,
            "converted_from": "gptq (qrecipe/kernels/gptq_awq.py)"}


def convert(src: Path, dst: Path, device: str = "cpu") -> Path:
    """Write the AWQ GEMM form of the GPTQ or compressed-tensors checkpoint in src into dst (one
    model.safetensors, config.json, and links to every other file). Returns dst."""
    src, dst = Path(src), Path(dst)
    conf = json.loads((src / "config.json").read_text())
    saved = conf.get("quantization_config") or {}
    s = scheme(saved)
    tensors = files.read_tensors(src)
    if str(saved.get("quant_method", "")).lower() == "compressed-tensors":
        tensors = ct_gptq.to_gptq(tensors, ct_gptq.scheme(saved))
    prefixes = ct_gptq.quantized(tensors)
    parts = (".qweight", ".qzeros", ".scales", ".g_idx")
    gptq = {p + d for p in prefixes for d in parts}
    out = {n: v for n, v in tensors.items() if n not in gptq}
    for p in prefixes:
        mod = {d[1:]: tensors[p + d] for d in parts if p + d in tensors}
        out.update({f"{p}.{n}": v for n, v in convert_module(mod, s, device).items()})
    conf["quantization_config"] = awq_config(s, _unquantized(out, prefixes))
    return files.write(src, dst, out, conf)


def _unquantized(tensors: Dict[str, Any], prefixes: List[str]) -> Optional[List[str]]:
    """The modules inside the decoder blocks with a dense 2-D weight (a Linear left unquantized),
    which AWQ's loader would otherwise replace (it skips the lm_head by itself); None: none."""
    blocks = {_block(p) for p in prefixes} - {None}
    keep = [n[: -len(".weight")] for n, v in tensors.items()
            if n.endswith(".weight") and v.dim() == 2 and _block(n) in blocks]
    return sorted(keep) or None


def _block(name: str) -> Optional[str]:
    where = files.block_of(name)
    return where[0] if where else None
