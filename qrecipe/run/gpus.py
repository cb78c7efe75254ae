"""GPU assignment for the jobs of a local parallel sweep (joblib launcher on a many-GPU host).

Each job, before anything touches CUDA, takes exclusive file locks on `gpus_per_job` GPUs of the
pool and sets CUDA_VISIBLE_DEVICES to them; it releases them when it ends. Locks (fcntl.flock)
live in one folder per host, so jobs of different sweeps on the same host never share a GPU
either, and a crashed job's locks vanish with its process. With N GPUs and a launcher running N
jobs at once, a 4-point bits sweep on a 4-GPU host runs its four points side by side; a job that
finds every GPU taken waits for one to free up.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from qrecipe import cuda
from qrecipe.environ import restore_env
from qrecipe.errors import QRecipeError

log = logging.getLogger(__name__)


def gpu_pool(explicit: Optional[str] = None) -> List[str]:
    """GPU ids jobs may use: hardware.gpu_pool, else CUDA_VISIBLE_DEVICES, else nvidia-smi.
    (Asking torch would initialize CUDA before CUDA_VISIBLE_DEVICES is set.)"""
    spec = explicit if explicit is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is not None:
        return [g.strip() for g in str(spec).split(",") if g.strip()]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True,
                                 timeout=30).stdout
            return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU")]
        except (OSError, subprocess.SubprocessError):
            pass
    return []


class GPULease:
    """Exclusive hold of some GPUs of the pool, through one lock file per GPU."""

    def __init__(self, lock_dir: Path, pool: List[str], count: int,
                 poll: float = 0.5, timeout: Optional[float] = None):
        if count < 1:
            raise QRecipeError("must be at least 1", key="hardware.gpus_per_job", value=count)
        if count > len(pool):
            raise QRecipeError(f"the pool has only {len(pool)} GPU(s): {','.join(pool) or '-'}",
                               key="hardware.gpus_per_job", value=count)
        self.lock_dir, self.pool, self.count = Path(lock_dir), pool, count
        self.poll, self.timeout = poll, timeout
        self.gpus: List[str] = []
        self._files: list = []

    def _try_take(self) -> bool:
        for g in self.pool:
            f = open(self.lock_dir / f"gpu-{g}.lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self._files.append(f)
            self.gpus.append(g)
            if len(self.gpus) == self.count:
                return True
        self.release()  # not enough free: give back what we took, so two jobs cannot deadlock
        return False

    def acquire(self) -> List[str]:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        waited = False
        while not self._try_take():
            if self.timeout is not None and time.monotonic() - t0 > self.timeout:
                raise TimeoutError(f"no {self.count} free GPU(s) of {self.pool}")
            if not waited:
                log.info("gpus: all %d taken, waiting for %d to free up", len(self.pool),
                         self.count)
                waited = True
            time.sleep(self.poll)
        return self.gpus

    def release(self) -> None:
        for f in self._files:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        self._files, self.gpus = [], []


# Launchers whose engine gives each job its own GPUs set this in the job's environment
# (conf/hydra/launcher/slurm_gpu.yaml `setup`, ray_*.yaml `runtime_env`): the job keeps the
# CUDA_VISIBLE_DEVICES the engine set and takes no lock, since the engine schedules, not qrecipe.
ENGINE_ENV = "QRECIPE_GPUS_ASSIGNED_BY"


def engine_gpus(count: int) -> Optional[List[str]]:
    """The GPUs an engine (SLURM, Ray) gave this job; None where no engine assigns GPUs."""
    engine = os.environ.get(ENGINE_ENV)
    if not engine:
        return None
    gpus = gpu_pool(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    if len(gpus) < count:
        raise QRecipeError(f"{engine} gave this job {len(gpus)} GPU(s) ({','.join(gpus) or '-'})",
                           key="hardware.gpus_per_job", value=count,
                           hint="ask the launcher for as many: hydra.launcher.gpus_per_node "
                                "(SLURM) or hydra.launcher.ray.remote.num_gpus (Ray)")
    return gpus


# A worker process that has initialized CUDA is bound to the GPUs it saw then: changing
# CUDA_VISIBLE_DEVICES afterwards has no effect. Such a process (a reused joblib/loky worker)
# keeps its lease for the rest of its life and reuses it for its next job.
_PROCESS_LEASE: Optional[GPULease] = None


@contextmanager
def assigned_gpus(hw, lock_dir: Path) -> Iterator[Optional[List[str]]]:
    """Hold GPUs for one job and expose only them through CUDA_VISIBLE_DEVICES.
    No-op (yields None) unless the job runs on CUDA with hardware.assign_gpus on."""
    global _PROCESS_LEASE
    if hw.device != "cuda" or not hw.get("assign_gpus", False):
        yield None
        return
    count = hw.get("gpus_per_job", 1)
    given = engine_gpus(count)
    if given is not None:
        log.info("gpus: %s gave this job GPU(s) %s", os.environ[ENGINE_ENV], ",".join(given))
        yield given
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    lease = _PROCESS_LEASE
    if lease is None or lease.count != count:
        if cuda.initialized():
            raise QRecipeError("CUDA was initialized before a GPU was assigned",
                               key="hardware.gpus_per_job", value=count)
        pool = gpu_pool(hw.get("gpu_pool"))
        if not pool:  # no GPU here at all: validation reports that, with the key to change
            yield None
            return
        lease = GPULease(lock_dir, pool, count)
        lease.acquire()
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(lease.gpus)
    log.info("gpus: this job holds GPU(s) %s of pool %s", ",".join(lease.gpus),
             ",".join(lease.pool))
    try:
        yield list(lease.gpus)
    finally:
        if cuda.initialized():
            _PROCESS_LEASE = lease  # bound to this process now; freed when it exits
        else:  # the next job in this process picks from the whole pool again
            lease.release()
            _PROCESS_LEASE = None
            restore_env("CUDA_VISIBLE_DEVICES", before)
