"""Resources checked before the work starts: free disk against the expected output plus cache,
free RAM (and GPU memory) against a simple peak estimate. Both stop early with the numbers and
what to change. Out-of-memory during calibration or quantization becomes one line naming the
stage and the settings to lower.

The estimate is deliberately simple and lives in one function (`estimate`): a richer planner
(`qrecipe plan`) can replace it by providing the same fields.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import psutil

from qrecipe.errors import QRecipeError
from qrecipe.run.dtypes import run_dtype
from qrecipe.telemetry.overhead import timed_cuda_start, timed_import

GiB = 1024 ** 3
_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "auto": 4}
# Skip the checks (e.g. a file system that reports free space wrongly): QRECIPE_NO_RESOURCE_CHECK=1
SKIP_ENV = "QRECIPE_NO_RESOURCE_CHECK"


@dataclass(frozen=True)
class Estimate:
    params: int  # parameters of the model (embeddings included)
    output_bytes: int  # the quantized model on disk
    cache_bytes: int  # what the run adds to the cache (a dequantized GGUF)
    peak_ram_bytes: int  # host memory while quantizing
    peak_gpu_bytes: int  # GPU memory while quantizing (0 on CPU)


def _params(info, vocab: int) -> int:
    h, i, n = info.hidden_size, info.intermediate_size, info.num_layers
    return n * (4 * h * h + 3 * h * i) + 2 * vocab * h


def estimate(cfg, info, vocab: int = 32000) -> Estimate:
    p = _params(info, vocab)
    dtype = _BYTES.get(run_dtype(cfg)[0], 4)
    bits = cfg.bits.width
    out = int(p * bits / 8 * 1.1 + 2 * vocab * info.hidden_size * 2)  # + fp16 embeddings, head
    cache = p * 4 if cfg.model.source == "gguf" else 0
    c = cfg.calibration
    # Inputs of one layer for every calibration row, kept in fp32, plus the Hessian of the
    # widest layer; the weights themselves once at load dtype.
    acts = c.num_samples * c.seq_len * max(info.hidden_size, info.intermediate_size) * 4 * 2
    layer = (4 * info.hidden_size ** 2 + 3 * info.hidden_size * info.intermediate_size) * 4
    weights = p * dtype
    if cfg.hardware.device == "cuda":
        return Estimate(p, out, cache, weights + acts, layer * 2 + acts)
    return Estimate(p, out, cache, weights + acts + layer * 2, 0)


def _free_disk(path: Path) -> int:
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def check(cfg, info, out: Path, cache_dir: Path, vocab: int = 32000) -> Estimate:
    """Raise QRecipeError when the disk or memory cannot hold the run."""
    est = estimate(cfg, info, vocab)
    if os.environ.get(SKIP_ENV):
        return est
    need_out = est.output_bytes
    if _free_disk(out) < need_out:
        raise QRecipeError(f"not enough free disk for the output: {_gib(_free_disk(out))} free, "
                           f"about {_gib(need_out)} needed", key="hydra.run.dir", value=str(out),
                           hint="free space or choose another output location")
    if est.cache_bytes and _free_disk(cache_dir) < est.cache_bytes:
        raise QRecipeError(f"not enough free disk for the cache: {_gib(_free_disk(cache_dir))} "
                           f"free, about {_gib(est.cache_bytes)} needed (dequantized GGUF)",
                           key="cache.dir", value=str(cache_dir),
                           hint="free space or point QRECIPE_CACHE elsewhere")
    avail = psutil.virtual_memory().available
    if est.peak_ram_bytes > avail:
        raise QRecipeError(f"not enough free memory: {_gib(avail)} available, about "
                           f"{_gib(est.peak_ram_bytes)} needed at the peak",
                           key="calibration.num_samples", value=cfg.calibration.num_samples,
                           hint=LOWER)
    if cfg.hardware.device == "cuda":
        import torch  # deferred: torch, only for a CUDA job
        with timed_cuda_start():  # the job's first CUDA call: the context starts here
            free, _ = torch.cuda.mem_get_info()
        if est.peak_gpu_bytes > free:
            raise QRecipeError(f"not enough free GPU memory: {_gib(free)} free, about "
                               f"{_gib(est.peak_gpu_bytes)} needed at the peak",
                               key="calibration.num_samples", value=cfg.calibration.num_samples,
                               hint=LOWER)
    return est


LOWER = ("lower calibration.num_samples or calibration.seq_len, use a smaller batch, or offload "
         "(hardware.device_map=auto with hardware.max_memory)")


def is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    name = type(e).__name__
    return name in ("OutOfMemoryError", "OutOfMemoryErrorCUDA") or \
        "out of memory" in str(e).lower()[:300]


@contextmanager
def oom_guard(stage: str, cfg):
    """Out-of-memory inside `stage` -> one line naming the stage and what to lower."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only OOMs are translated; the rest re-raised
        if not is_oom(e):
            raise
        c = cfg.calibration
        raise QRecipeError(f"out of memory during {stage} ({type(e).__name__})",
                           key="calibration", value=f"num_samples={c.num_samples}, "
                           f"seq_len={c.seq_len}, device={cfg.hardware.device}",
                           hint=LOWER) from None


def env_threads() -> Optional[int]:
    """OMP_NUM_THREADS where it names a positive count: the usual way a scheduler or a user
    shares a node's cores between processes (a SLURM job step, two pytest workers)."""
    v = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(v) if v.isdigit() and int(v) > 0 else None


def set_threads(hw) -> None:
    """CPU threads for torch: hardware.num_threads, else OMP_NUM_THREADS, else every core.
    Processes that share cores must not each take all of them: two 2-thread jobs on 2 cores
    ran emulated-layer evaluation 5-7x slower than one."""
    n = hw.num_threads or env_threads() or os.cpu_count() or 1
    # gptqmodel sizes its CPU worker pool from this variable; it must be set before its import.
    # Never below 2: gptqmodel refuses to start with 1 (backends/gptqmodel/adapter.py _set_env).
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, n)))
    with timed_import("torch"):  # the import, not qrecipe's work (metrics.json `overhead`)
        import torch  # deferred: torch, timed as the job's import
    torch.set_num_threads(n)
