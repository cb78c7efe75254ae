"""GPU assignment for local parallel sweeps, tested without GPUs: fake pools, real locks, real
concurrent processes."""
from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from omegaconf import OmegaConf

from qrecipe.errors import QRecipeError
from qrecipe.run.gpus import GPULease, assigned_gpus, gpu_pool


def _job(lock_dir, pool, count, hold, q):
    lease = GPULease(lock_dir, pool, count, poll=0.02)
    gpus = lease.acquire()
    t0 = time.monotonic()
    time.sleep(hold)
    q.put((tuple(gpus), t0, time.monotonic()))
    lease.release()


def _run_jobs(lock_dir, pool, count, n, hold=0.4):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_job, args=(lock_dir, pool, count, hold, q)) for _ in range(n)]
    for p in procs:
        p.start()
    res = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    return res


def _overlap(a, b):
    return a[1] < b[2] and b[1] < a[2]


@pytest.mark.parametrize("n_gpus,per_job,n_jobs", [(4, 1, 4), (4, 2, 2), (4, 1, 8), (3, 2, 3)])
def test_concurrent_jobs_never_share_a_gpu(tmp_path, n_gpus, per_job, n_jobs):
    pool = [str(i) for i in range(n_gpus)]
    res = _run_jobs(tmp_path, pool, per_job, n_jobs)
    assert all(len(g) == per_job and len(set(g)) == per_job for g, *_ in res)
    for i, a in enumerate(res):
        for b in res[i + 1:]:
            if _overlap(a, b):  # running at the same time: disjoint GPU sets
                assert not set(a[0]) & set(b[0]), (a, b)
    if n_jobs * per_job <= n_gpus:  # enough GPUs: all jobs ran side by side
        assert all(_overlap(a, b) for i, a in enumerate(res) for b in res[i + 1:])


def test_pool_sources(monkeypatch):
    assert gpu_pool("0, 2,3") == ["0", "2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,5")
    assert gpu_pool() == ["1", "5"]


def test_asking_more_gpus_than_the_pool_is_a_user_error(tmp_path):
    with pytest.raises(QRecipeError, match="hardware.gpus_per_job=3"):
        GPULease(tmp_path, ["0", "1"], 3)


def test_assigned_gpus_sets_and_restores_visibility(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    hw = OmegaConf.create({"device": "cuda", "assign_gpus": True, "gpus_per_job": 2,
                           "gpu_pool": "4,5,6"})
    import os
    with assigned_gpus(hw, tmp_path) as gpus:
        assert gpus == ["4", "5"] and os.environ["CUDA_VISIBLE_DEVICES"] == "4,5"
        blocker = GPULease(tmp_path, ["4", "5", "6"], 2, timeout=0.1)
        with pytest.raises(TimeoutError):  # only GPU 6 is free
            blocker.acquire()
    again = GPULease(tmp_path, ["4", "5", "6"], 3, timeout=1)
    assert again.acquire() == ["4", "5", "6"]  # all released at the end of the job
    again.release()
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    cpu = OmegaConf.create({"device": "cpu", "assign_gpus": True})
    with assigned_gpus(cpu, tmp_path) as gpus:
        assert gpus is None


def test_cuda_questions_never_import_torch():
    """qrecipe/cuda.py answers from torch only if the job imported it: asking costs no import
    (the GPU lease asks before anything may touch CUDA)."""
    import subprocess
    import sys
    code = ("import sys; from qrecipe import cuda; "
            "assert cuda.loaded() is None and cuda.initialized() is False; "
            "print('torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr


def test_gpus_an_engine_assigned_take_no_lock(tmp_path, monkeypatch):
    """Under SLURM or Ray (their launchers set QRECIPE_GPUS_ASSIGNED_BY) the job keeps the GPUs
    the engine gave it: a lock another job holds on the same GPU id does not make it wait."""
    import os
    monkeypatch.setenv("QRECIPE_GPUS_ASSIGNED_BY", "slurm")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    other = GPULease(tmp_path, ["0"], 1)
    other.acquire()  # a job on another GPU node-locally numbered 0 too (cgroup-renumbered)
    hw = OmegaConf.create({"device": "cuda", "assign_gpus": True, "gpus_per_job": 1})
    with assigned_gpus(hw, tmp_path) as gpus:
        assert gpus == ["0"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    other.release()
    with pytest.raises(QRecipeError, match="slurm gave this job 1 GPU"):
        with assigned_gpus(OmegaConf.merge(hw, {"gpus_per_job": 2}), tmp_path):
            pass
