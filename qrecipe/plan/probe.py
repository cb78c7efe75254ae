"""This machine's float32 matrix-multiply rate: what scales a CPU time measured on another machine
to this one (qrecipe/plan/times.py). Quantizing on a CPU is mostly float32 GEMMs (the layers'
forward passes over the calibration rows, GPTQ's Hessians, AWQ's scale search), so two machines'
times compare about as their GEMM rates do.

The probe times a 256 x 1024 by 1024 x 1024 float32 product (0.5 GFLOP) with numpy on one
thread, over and over for about a second, keeps the fastest product (on a machine busy with other
work some products still run unpreempted), and multiplies that rate by the physical cores this
process may use: torch runs one GEMM thread per physical core. One thread, in a subprocess with
the BLAS thread variables set to 1, so the figure means the same on every machine and a busy
machine does not halve it. numpy, not torch: `qrecipe plan` never imports torch; the figure is a
ratio between machines, measured the same way on both. It is cached in the qrecipe cache
(cpu-probe/), keyed by the CPU model and those cores, so a plan probes once per machine. A
measurement records its machine's figure (measurements.json: probe_gflops, from
`qrecipe plan --probe`).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import psutil

from qrecipe.boundary.jsonfile import read_object
from qrecipe.errors import QRecipeError
from qrecipe.recipes.schema import default_cache_dir
from qrecipe.record.atomic import write_bytes
from qrecipe.record.outputs import cpu_name

SHAPE = (256, 1024, 1024)  # m, k, n: (m x k) @ (k x n)
SECONDS = 1.0
KIND = "cpu-probe"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_CODE = """
import time
import numpy as np
m, k, n = {shape}
rng = np.random.default_rng(0)
a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
a @ b
best, end = float("inf"), time.perf_counter() + {seconds}
while time.perf_counter() < end:
    t = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - t)
print(2 * m * k * n / best / 1e9)
"""


def cores() -> int:
    """The physical cores this process may run on (a container's or taskset's limit too)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    return max(1, min(psutil.cpu_count(logical=False) or allowed, allowed))


def machine_key() -> str:
    return f"{cpu_name()} x {cores()} cores"


def measure() -> Optional[float]:
    """GFLOP/s of float32 GEMM on this machine: one thread's best rate x the physical cores.
    None where numpy is missing or the probe fails (then no CPU time is scaled to here)."""
    env = {**os.environ, **{v: "1" for v in THREAD_VARS}}
    code = _CODE.format(shape=SHAPE, seconds=SECONDS)
    try:
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=60 + 10 * SECONDS)
        return round(float(p.stdout) * cores(), 1) if p.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None



def this_machine(cache_dir: Optional[Path] = None) -> Dict[str, Any]:
    """{"machine", "gflops", "cached"} of this machine: from the cache, else probed (and cached).
    gflops None: no probe possible here. A cache entry is a plan's estimate, nothing a run
    reads: a plain JSON file (read within the JSON limits), written atomically."""
    key = hashlib.sha256(f"{machine_key()}|{SHAPE}|{SECONDS}".encode()).hexdigest()[:32]
    path = (cache_dir or default_cache_dir()) / KIND / f"{key}.json"
    try:
        hit = read_object(path, "cache.dir") if path.is_file() else {}
    except QRecipeError:  # unreadable: probed again, and rewritten
        hit = {}
    if isinstance(hit.get("gflops"), (int, float)) and hit["gflops"] > 0:
        return {"machine": machine_key(), "gflops": float(hit["gflops"]), "cached": True}
    gflops = measure()
    if gflops:
        entry = {"machine": machine_key(), "gflops": gflops, "shape": list(SHAPE),
                 "date": time.strftime("%Y-%m-%d")}
        try:
            write_bytes(path, json.dumps(entry, indent=2).encode())
        except OSError:  # a read-only cache: probed again next time
            pass
    return {"machine": machine_key(), "gflops": gflops, "cached": False}
