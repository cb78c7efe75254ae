"""SLURM for real: scripts/slurm-local.sh starts a one-node cluster (munged, slurmdbd on a private
MariaDB, slurmctld, slurmd with two fake GPUs) in a private network namespace, and qrecipe sweeps
of the tiny random Llama run through the shipped submitit launchers on it. Every sweep job is its
own array task (sacct), each gets its own GPU from SLURM, the report at the sweep root gathers
them and the logs land in <sweep dir>.submitit/. A task stopped by `scontrol requeue` gets
SIGTERM, exits as an interrupted run (143) and, requeued, resumes to an uninterrupted job's output
hashes; a sweep re-submitted after it lost a job skips its complete jobs. `make test-cluster`."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from cluster_helpers import (
    ROOT,
    TESTS,
    NetNS,
    file_sha,
    gate_args,
    job_dirs,
    outputs_of,
    sweep_args,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

DAEMONS = ("munged", "slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "mariadbd")
if not all(shutil.which(b) for b in DAEMONS):
    pytest.skip("no SLURM here; to run: apt-get install -y slurm-wlm slurmdbd munge "
                "mariadb-server && make test-cluster", allow_module_level=True)

SCRIPT = str(ROOT / "scripts" / "slurm-local.sh")
# One CPU and 2 GB per array task: both of the node's CPUs run two tasks at once.
ON_DEBUG = ["hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=15"]


class Slurm:
    def __init__(self, ns: NetNS, env: dict) -> None:
        self.ns, self.env = ns, env

    def run(self, *cmd: str, timeout: float = 60) -> str:
        p = self.ns.run(list(cmd), timeout=timeout, env=self.env)
        assert p.returncode == 0, f"{' '.join(cmd)}: {p.stderr[-2000:]}"
        return p.stdout

    def sweep(self, args, log, timeout: float = 420) -> int:
        """python -m qrecipe ARGS on the cluster's side of the namespace; its exit code."""
        p = self.popen(args, log)
        try:
            return p.wait(timeout=timeout)
        finally:
            stop(p)

    def popen(self, args, log) -> subprocess.Popen:
        return self.ns.popen([sys.executable, "-m", "qrecipe", *args], log, env=self.env)

    def tasks(self, array_id: str, duplicates: bool = False) -> list:
        """sacct rows (JobID, State, ExitCode) of the array's tasks, steps left out."""
        out = self.run("sacct", "-j", array_id, "--format=JobID,State,ExitCode", "--parsable2",
                       "--noheader", *(["--duplicates"] if duplicates else []))
        return [tuple(line.split("|")) for line in out.splitlines() if "." not in line]

    def state(self, task: str) -> str:
        return self.run("squeue", "-h", "-j", task, "-o", "%T").strip()


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=60)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm")
    with NetNS(base / "netns") as ns:
        if not ns.prefix:
            pytest.skip("needs root (a private network namespace keeps slurmdbd off the network)")
        env = {"QRECIPE_SLURM_DIR": str(base / "state"), "QRECIPE_SLURM_ACCOUNTING": "1",
               "SLURM_CONF": str(base / "state" / "slurm.conf"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get(
                   "PYTHONPATH")])),  # the jobs unpickle cluster_helpers.Gate
               "QRECIPE_SEAL_KEY_FILE": str(base / "seal.key")}
        cluster = Slurm(ns, env)
        try:
            cluster.run(SCRIPT, "start", timeout=180)
            print(cluster.run("sinfo"))
            yield cluster
        finally:
            ns.run([SCRIPT, "stop"], timeout=120, env=env)


def submitit(root):
    """submitit's folder of a sweep: beside it (conf/hydra/launcher/slurm_gpu.yaml says why)."""
    return root.parent / f"{root.name}.submitit"


def arrays(root) -> list:
    """The SLURM array ids of a sweep dir's submissions, oldest first, from submitit's folders
    (<array>_<task>)."""
    ids = {d.name.split("_")[0] for d in submitit(root).iterdir()
           if d.is_dir() and d.name.split("_")[0].isdigit()}
    return sorted(ids, key=int)


def rows(root) -> dict:
    return {r["bits"]: r for r in csv.DictReader(open(root / "summary.csv"))}


def task_log(root, task: str) -> str:
    return (submitit(root) / task / f"{task}_0_log.err").read_text(errors="replace")


@pytest.fixture(scope="module")
def array_sweep(slurm, tiny_model_dir, tmp_path_factory):
    """A 3-job sweep through hydra/launcher=slurm_gpu, one fake GPU per job."""
    root = tmp_path_factory.mktemp("array") / "sweep"
    rc = slurm.sweep(sweep_args(tiny_model_dir, root, "hydra/launcher=slurm_gpu", *ON_DEBUG),
                     root.parent / "driver.log")
    assert rc == 0, (root.parent / "driver.log").read_text()[-3000:]
    return root


def test_every_job_is_an_array_task_and_the_report_gathers_them(slurm, array_sweep):
    root, [array] = array_sweep, arrays(array_sweep)
    done = wait_for(lambda: (t := slurm.tasks(array)) and all(s == "COMPLETED" for _, s, _ in t)
                    and t, 60, "sacct to show the array completed")
    print(slurm.run("sacct", "-j", array, "--format=JobID,JobName,State,ExitCode,Elapsed"))
    assert sorted(done) == [(f"{array}_{i}", "COMPLETED", "0:0") for i in range(3)]
    r = rows(root)
    assert set(r) == {"2", "4", "8"} and all(v["status"] == "complete" for v in r.values())
    jobs = job_dirs(root)
    assert [d.name.split("_")[0] for d in jobs] == ["0", "1", "2"]
    gpus = set()
    for i, job in enumerate(jobs):
        # where docs/cluster.md says: submitit's logs per task, the run's own log in its folder
        task = submitit(root) / f"{array}_{i}"
        assert "Job completed successfully" in (task / f"{array}_{i}_0_log.out").read_text()
        assert f"report: {job}/report.md" in task_log(root, f"{array}_{i}")
        assert (job / "run.log").is_file() and (job / "manifest.json").is_file()
        gpus.add(json.loads((job / "env.json").read_text())["cuda_visible_devices"])
    assert gpus == {"0", "1"}  # SLURM handed out both fake GPUs: tasks 0 and 1 ran side by side


def test_requeued_task_resumes_to_an_uninterrupted_jobs_outputs(slurm, array_sweep,
                                                                tiny_model_dir, tmp_path):
    root, gate = tmp_path / "sweep", tmp_path / "gate"
    args = sweep_args(tiny_model_dir, root, "hydra/launcher=slurm_cpu", *ON_DEBUG,
                      *gate_args(gate, job=1), bits=("w2", "w4"))
    p = slurm.popen(args, tmp_path / "driver.log")
    try:
        held = wait_for(lambda: (gate / "reached").is_file() and
                        json.loads((gate / "reached").read_text()), 300, "job 1 to evaluate")
        task = f"{held['SLURM_ARRAY_JOB_ID']}_{held['SLURM_ARRAY_TASK_ID']}"
        slurm.run("scontrol", "requeue", task)
        # A requeued job may start again only after a delay (BeginTime, ~2 min): now, here.
        wait_for(lambda: slurm.state(task) == "PENDING", 90, f"{task} to be pending")
        slurm.run("scontrol", "update", f"JobId={task}", "StartTime=now")
        rc = p.wait(timeout=300)
    finally:
        stop(p)
    assert rc == 0, (tmp_path / "driver.log").read_text()[-3000:]
    log = task_log(root, task)
    assert "interrupted by SIGTERM during evaluate" in log
    assert "task 0: Exited with exit code 143" in log  # srun's word for the first attempt
    assert "resuming the unfinished run in" in log
    states = wait_for(lambda: (t := slurm.tasks(task, duplicates=True)) and
                      t[-1][1] == "COMPLETED" and t, 60, "sacct to show the requeued task done")
    print(slurm.run("sacct", "-j", task, "--duplicates", "--format=JobID,State,ExitCode,Start"))
    assert [s for _, s, _ in states] == ["REQUEUED", "COMPLETED"]
    job = job_dirs(root)[1]
    assert json.loads((job / "metrics.json").read_text())["resumed"] == {
        "reused_stages": ["quantize"]}
    assert outputs_of(job) == outputs_of(job_dirs(array_sweep)[1])  # the w4 job, uninterrupted
    assert all(v["status"] == "complete" for v in rows(root).values())


def snapshot(d) -> dict:
    return {str(p.relative_to(d)): file_sha(p) for p in sorted(d.rglob("*")) if p.is_file()}


def test_resubmitted_sweep_skips_complete_jobs(slurm, tiny_model_dir, tmp_path):
    root, gate = tmp_path / "sweep", tmp_path / "gate"
    args = sweep_args(tiny_model_dir, root, "hydra/launcher=slurm_cpu", *ON_DEBUG,
                      *gate_args(gate, job=1), bits=("w2", "w4"))
    p = slurm.popen(args, tmp_path / "first.log")
    try:
        held = wait_for(lambda: (gate / "reached").is_file() and
                        json.loads((gate / "reached").read_text()), 300, "job 1 to evaluate")
        # the task is lost for good (as on a node failure without requeue)
        slurm.run("scancel", f"{held['SLURM_ARRAY_JOB_ID']}_{held['SLURM_ARRAY_TASK_ID']}")
        rc = p.wait(timeout=300)
    finally:
        stop(p)
    assert rc == 1  # submitit reports the lost task: the sweep did not complete
    said = (tmp_path / "first.log").read_text()
    assert "error: submitit lost a sweep job for good (UncompletedJobError: " in said, said[-3000:]
    assert "the same command again resumes the sweep" in said and "Traceback" not in said
    done, lost = job_dirs(root)
    assert json.loads((lost / "error.json").read_text())["status"] == "interrupted"
    kept = snapshot(done)

    assert slurm.sweep(args, tmp_path / "second.log") == 0
    second = arrays(root)[-1]  # submitit's folder keeps the first submission's folders too
    assert f"already complete: {done}" in task_log(root, f"{second}_0")
    assert snapshot(done) == kept  # the complete job was not touched
    assert json.loads((lost / "metrics.json").read_text())["resumed"] == {
        "reused_stages": ["quantize"]}
    assert all(v["status"] == "complete" for v in rows(root).values())
