"""The dtype a job holds and computes the unquantized model in, decided once for the runner, the
resource check and the plan-against-measurement report.

The rule: `hardware.dtype` when the profile (or the user) sets one; else `model.dtype`; except
that a bfloat16 model on a CPU without fast bfloat16 matmuls is run in float32.

Why the exception: PyTorch's CPU bfloat16 matmul is fast only through oneDNN, which it uses only
where the CPU has AVX-512 (BW, VL, DQ) or AMX on x86, or the BF16 extension on Arm
(`torch.ops.mkldnn._is_mkldnn_bf16_supported()`). Elsewhere, e.g. an AVX2-only AMD EPYC, it
falls back to a scalar loop. Measured on such a 2-core machine (torch 2.13, one thread,
benchmarks/cpu_bf16.py): SmolLM2's matmuls took 38x longer in bfloat16 than in float32, a
4096 x 4096 Linear 127x; its GPTQ took 52-62 s per layer in bfloat16 against 14-15 s in float32
(docs/benchmarks.md, "bfloat16 on CPUs without AVX-512").

The compute dtype is the job's own choice: the checkpoint is saved in the recipe's dtype
(`saved_dtype`: the tensors left unquantized are cast back, qrecipe/record/recast.py), so the
same recipe gives the same checkpoint layout, dtype and size on every machine, and its
perplexity, which differs from a bfloat16 run's in the last bits only, is compared with the
recipe's expectations within their tolerance. An explicit `hardware.dtype=bfloat16` keeps
bfloat16 on any CPU. The check reads /proc/cpuinfo (no torch import: config-only commands use it
too), or the file QRECIPE_CPUINFO names (a test, or proving the float32 path on a CPU that has
AVX-512); where that cannot be read, nothing is changed.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

# x86 flags with which oneDNN runs bfloat16 matmuls (AVX-512 core, or AMX); Arm's feature name
_X86_AVX512 = {"avx512bw", "avx512vl", "avx512dq"}
_FAST = ("amx_bf16", "avx512_bf16")
_ARM = "bf16"


def cpu_fast_bf16(cpuinfo: Optional[str] = None) -> Optional[bool]:
    """Whether this CPU runs bfloat16 matmuls through oneDNN; None where /proc/cpuinfo (or
    $QRECIPE_CPUINFO) cannot be read or names no flags (not Linux)."""
    cpuinfo = cpuinfo or os.environ.get("QRECIPE_CPUINFO") or "/proc/cpuinfo"
    try:
        text = open(cpuinfo).read()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return _X86_AVX512 <= flags or any(f in flags for f in _FAST) or _ARM in flags
    return None


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
