"""Ray for real, through hydra-ray-launcher: a sweep of the tiny random Llama through
hydra/launcher=ray_local (a private Ray instance of the sweep's own) and through
hydra/launcher=ray_cluster on a cluster started here (`ray start --head`, two CPUs and two
logical GPUs, in a private network namespace, token auth with a key of the test's). Jobs are Ray
tasks: one worker process each, GPUs handed out by Ray. A task whose worker gets SIGTERM stops as
an interrupted run; Ray runs it again and it resumes to the uninterrupted job's output hashes.
`make test-cluster`."""
from __future__ import annotations

import csv
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile

import pytest
from cluster_helpers import (
    TESTS,
    NetNS,
    gate_args,
    job_dirs,
    outputs_of,
    sweep_args,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

try:
    import hydra_plugins.hydra_ray_launcher  # noqa: F401
    import ray  # noqa: F401
except ImportError:
    pytest.skip("no Ray here; to run: pip install -c constraints.txt 'ray[default]' "
                "hydra-ray-launcher && make test-cluster", allow_module_level=True)

PORT = 6390  # inside the namespace: no clash with anything on the host


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    """Environment of every Ray process here: workers inherit it from `ray start`. Ray's temp
    dir (its sessions, logs and unix sockets: a short path) is removed at the end."""
    base = tmp_path_factory.mktemp("ray")
    token = base / "auth_token"  # Ray 2.60 authenticates every RPC with it; never ~/.ray's
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    temp = tempfile.mkdtemp(prefix="qr-ray-", dir="/tmp")
    yield {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_TMPDIR": temp,
           "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get(
               "PYTHONPATH")])),  # the jobs unpickle cluster_helpers.Gate
           "QRECIPE_SEAL_KEY_FILE": str(base / "seal.key")}
    subprocess.run(["rm", "-rf", temp], check=False, timeout=60)


@pytest.fixture(scope="module")
def netns(tmp_path_factory):
    with NetNS(tmp_path_factory.mktemp("netns") / "ns") as ns:
        if not ns.prefix:
            pytest.skip("needs root (a private network namespace keeps Ray's ports, which bind "
                        "to every interface, off the network)")
        yield ns


@pytest.fixture(scope="module")
def ray_head(netns, ray_env):
    """`ray start --head --block` in the namespace; stopped (SIGTERM, then SIGKILL of its process
    group) at the end."""
    head = netns.popen(["ray", "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "2",
                        "--include-dashboard=false", "--disable-usage-stats", "--port",
                        str(PORT), "--temp-dir", ray_env["RAY_TMPDIR"]],
                       os.path.join(ray_env["RAY_TMPDIR"], "head.log"), env=ray_env)
    try:
        wait_for(lambda: head.poll() is None and netns.run(
            ["ray", "status", "--address", f"127.0.0.1:{PORT}"], timeout=30,
            env=ray_env).returncode == 0, 90, "the Ray head to answer")
        yield f"127.0.0.1:{PORT}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # whatever of the head's outlived it
        except ProcessLookupError:
            pass


def sweep(netns, env, args, log, timeout: float = 420) -> int:
    p = netns.popen([sys.executable, "-m", "qrecipe", *args], log, env=env)
    try:
        return p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=60)


def rows(root) -> dict:
    return {r["bits"]: r for r in csv.DictReader(open(root / "summary.csv"))}


def workers(log: str) -> set:
    """Pids of the Ray workers that ran jobs, from the driver's log ("(_run_job pid=N)")."""
    return set(re.findall(r"\(_run_job pid=(\d+)\)", log))


@pytest.fixture(scope="module")
def local_sweep(netns, ray_env, tiny_model_dir, tmp_path_factory):
    """hydra/launcher=ray_local: the sweep starts its own Ray on two CPUs; no interruption."""
    root = tmp_path_factory.mktemp("ray_local") / "sweep"
    log = root.parent / "driver.log"
    rc = sweep(netns, dict(ray_env, QRECIPE_RAY_CPUS="2"),
               sweep_args(tiny_model_dir, root, "hydra/launcher=ray_local", bits=("w2", "w4")),
               log)
    assert rc == 0, log.read_text()[-3000:]
    return root, log.read_text()


def test_ray_local_sweep_runs_each_job_as_a_ray_task(local_sweep):
    root, log = local_sweep
    print("\n".join(line for line in log.splitlines() if "HYDRA" in line or "report:" in line))
    assert "Ray Launcher is launching 2 jobs" in log
    assert len(workers(log)) == 2  # max_calls=1: a fresh worker process per job
    r = rows(root)
    assert set(r) == {"2", "4"} and all(v["status"] == "complete" for v in r.values())


def test_sigtermed_ray_task_resumes_to_the_same_outputs(netns, ray_env, ray_head, local_sweep,
                                                        tiny_model_dir, tmp_path):
    root, gate = tmp_path / "sweep", tmp_path / "gate"
    env = dict(ray_env, RAY_ADDRESS=ray_head, QRECIPE_RAY_GPUS_PER_JOB="1")
    args = sweep_args(tiny_model_dir, root, "hydra/launcher=ray_cluster",
                      *gate_args(gate, job=1), bits=("w2", "w4"))
    log = tmp_path / "driver.log"
    p = netns.popen([sys.executable, "-m", "qrecipe", *args], log, env=env)
    try:
        held = wait_for(lambda: (gate / "reached").is_file() and
                        json.loads((gate / "reached").read_text()), 300, "job 1 to evaluate")
        os.kill(held["pid"], signal.SIGTERM)  # what a preempted Ray node does to its workers
        rc = p.wait(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    text = log.read_text()
    print("\n".join(line for line in text.splitlines() if "HYDRA" in line or "raylet" in line
                    or "interrupted by" in line or "resuming" in line))
    assert rc == 0, text[-3000:]
    assert "interrupted by SIGTERM during evaluate" in text
    assert "resuming the unfinished run in" in text  # Ray ran the task again (max_retries)
    assert len(workers(text)) == 3  # two jobs, one of them twice
    job = job_dirs(root)[1]
    assert json.loads((job / "metrics.json").read_text())["resumed"] == {
        "reused_stages": ["quantize"]}
    assert outputs_of(job) == outputs_of(job_dirs(local_sweep[0])[1])  # bit-identical to w4's
    assert all(v["status"] == "complete" for v in rows(root).values())
    # Ray, not qrecipe, gave each job its GPU: one of the two logical ones, recorded by the run
    gpus = {json.loads((d / "env.json").read_text())["cuda_visible_devices"]
            for d in job_dirs(root)}
    assert gpus <= {"0", "1"} and None not in gpus
