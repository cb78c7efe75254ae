"""GPTQ's Hessians (X^T X over the calibration tokens) on the GPU's tensor cores.

gptqmodel 7.6 copies each fp16/bf16 activation batch to float32 and multiplies it in float32,
under a guard that turns TF32 off: on Hopper that is a SIMT GEMM at ~1/15 of the tensor-core
rate, and at 128 x 2048 calibration tokens the down_proj Hessian alone is ~6e13 FLOPs a layer.
A float16 or bfloat16 product is exact in float32 (11 or 8 significant bits twice fit in 24), so
one tensor-core GEMM of the activations as they are, returned in float32
(`torch.mm(..., out_dtype=float32)`), forms the same products without the copy, 12-15x faster.
Its sums are less exact, though: the tensor cores do not round each addition as a float32 GEMM
does (measured on an H200 at 65,536 rows: 3.7e-4 of the largest entry, against ~1e-5). On a real
model that did not matter: SmolLM2's GPTQ perplexity on an H200 moved +0.6% (128 x 2048 rows) and
-0.9% (32 x 512) against the float32 path, inside the +1% bar, so the 80 GB profiles turn
hardware.tensor_core_hessian on (docs/benchmarks.md, "GPU: tensor-core Hessians on a real checkpoint"). CPU runs, float32
models and chunked accumulation (hessian chunk_size / chunk_bytes set) keep gptqmodel's own path.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from qrecipe.backends.gptqmodel.patches import TENSOR_CORE_HESSIAN
from qrecipe.backends.patching import guarded


def fast_xtx_applies(matrix, qcfg) -> bool:
    """Whether the tensor-core path replaces gptqmodel's for this activation batch."""
    import torch
    hess = getattr(qcfg, "hessian", None)
    return (matrix.is_cuda and matrix.dtype in (torch.float16, torch.bfloat16)
            and matrix.dim() == 2 and matrix.shape[0] > 0
            and getattr(hess, "chunk_size", None) is None
            and getattr(hess, "chunk_bytes", None) is None)


@contextmanager
def tensor_core_hessian(on: bool) -> Iterator[bool]:
    """hardware.tensor_core_hessian: gptqmodel's GPTQ.compute_hessian_xtx replaced for the
    length of one quantize() call (its worker threads run inside it) and restored after.
    Yields whether it is applied."""
    with guarded(TENSOR_CORE_HESSIAN, _replacement, on=on) as applied:
        yield applied


def _replacement(original):
    upstream = original["GPTQ.compute_hessian_xtx"]

    def compute_hessian_xtx(self, matrix):
        if fast_xtx_applies(matrix, self.qcfg):
            import torch
            return torch.mm(matrix.T, matrix, out_dtype=torch.float32)
        return upstream(self, matrix)
    return {"GPTQ.compute_hessian_xtx": compute_hessian_xtx}
