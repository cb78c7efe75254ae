"""What this CPU runs fast, read from /proc/cpuinfo (no torch import: config-only commands and
the kernel table ask it): whether PyTorch's bfloat16 matmuls have their fast path here.

PyTorch's CPU bfloat16 matmul is fast only through oneDNN, which it uses only where the CPU has
AVX-512 (BW, VL, DQ) or AMX on x86, or the BF16 extension on Arm
(`torch.ops.mkldnn._is_mkldnn_bf16_supported()`); elsewhere (an AVX2-only AMD EPYC) it is ~40x
slower than float32 (benchmarks/cpu_bf16.py). Two decisions follow: the dtype a job computes in
(qrecipe/run/dtypes.py) and the CPU kernel `auto` takes (qrecipe/kernels/table.py).

QRECIPE_CPUINFO names another file to read instead: a test, or the float32 path proved on a CPU
that has AVX-512 (with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, PyTorch then runs as
on an AVX2-only CPU).
"""
from __future__ import annotations

import os
from typing import Optional

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
