"""A qrecipe run whose GPTQ Hessians carry a chosen error: a CPU stand-in for how sensitive a
real model is to a less exact Hessian (hardware.tensor_core_hessian's sums on a GPU).

    HQ_REL=3.75e-4 [HQ_MODE=max|sum] python benchmarks/hessian_noise.py +recipe=smollm2_gptq_w4 ...

Each Hessian batch (gptqmodel's GPTQ.compute_hessian_xtx) gets symmetric uniform noise in
[-1, 1] times HQ_REL times: max |H| on every entry (HQ_MODE=max), or the entry's own sum of
|terms|, (|X|^T |X|)_ij (HQ_MODE=sum: how a float summation's error grows). Seeded. HQ_REL=0 is a
plain run of the same code. Never a quality setting: an experiment.
"""
import os
import runpy
import sys

import torch
from gptqmodel.quantization.gptq import GPTQ

_orig = GPTQ.compute_hessian_xtx
REL = float(os.environ.get("HQ_REL", "0"))
MODE = os.environ.get("HQ_MODE", "max")
_gen = torch.Generator().manual_seed(0)


def noisy_xtx(self, m):
    h = _orig(self, m)
    if REL:
        e = torch.rand(h.shape, generator=_gen, dtype=h.dtype) * 2 - 1
        e = (e + e.T) / 2
        if MODE == "sum":
            a = m.reshape(-1, m.shape[-1]).abs().float()
            h = h + e * REL * (a.T @ a)
        else:
            h = h + e * REL * h.abs().max()
    return h


GPTQ.compute_hessian_xtx = noisy_xtx
sys.argv = ["qrecipe"] + sys.argv[1:]
runpy.run_module("qrecipe", run_name="__main__")
