"""The dtype a job holds and computes the unquantized model in, decided once for the runner, the
resource check and the plan-against-measurement report.

The rule: `hardware.dtype` when the profile (or the user) sets one; else `model.dtype`; except
that a bfloat16 model on a CPU without fast bfloat16 matmuls is run in float32.

Why the exception: such a CPU has no fast bfloat16 matmul (qrecipe/kernels/cpu.py). Measured on
an AVX2-only 2-core AMD EPYC (torch 2.13, one thread, benchmarks/cpu_bf16.py): SmolLM2's matmuls
took 38x longer in bfloat16 than in float32, a 4096 x 4096 Linear 127x; its GPTQ took 52-62 s per
layer in bfloat16 against 14-15 s in float32 (docs/benchmarks.md, "bfloat16 on CPUs without
AVX-512").

The compute dtype is the job's own choice: the checkpoint is saved in the recipe's dtype
(`saved_dtype`: the tensors left unquantized are cast back, qrecipe/record/recast.py), so the
same recipe gives the same checkpoint layout, dtype and size on every machine, and its
perplexity, which differs from a bfloat16 run's in the last bits only, is compared with the
recipe's expectations within their tolerance. An explicit `hardware.dtype=bfloat16` keeps
bfloat16 on any CPU. The check reads /proc/cpuinfo (no torch import: config-only commands use it
too, qrecipe/kernels/cpu.py), or the file QRECIPE_CPUINFO names (a test, or proving the float32
path on a CPU that has AVX-512); where that cannot be read, nothing is changed.
"""
from __future__ import annotations

from typing import Optional, Tuple

from qrecipe.kernels.cpu import cpu_fast_bf16


def run_dtype(cfg, fast_bf16: Optional[bool] = None) -> Tuple[str, Optional[str]]:
    """(dtype, why) for this job: why is one line when the rule changed the model's dtype."""
    if cfg.hardware.get("dtype"):
        return cfg.hardware.dtype, None
    dtype = cfg.model.dtype
    if dtype != "bfloat16" or cfg.hardware.device != "cpu":
        return dtype, None
    if (cpu_fast_bf16() if fast_bf16 is None else fast_bf16) is not False:
        return dtype, None
    return "float32", ("model.dtype=bfloat16 computes in float32 on this CPU (no AVX-512 or AMX: "
                       "bfloat16 matmuls ~40x slower); the checkpoint is saved in bfloat16 "
                       "(hardware.dtype=bfloat16 computes in bfloat16)")


def saved_dtype(cfg) -> str:
    """The dtype the checkpoint's unquantized tensors are saved in: the recipe's
    (`hardware.dtype`, else `model.dtype`), whatever run_dtype computes in."""
    return cfg.hardware.get("dtype") or cfg.model.dtype
