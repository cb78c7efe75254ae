"""Shared by the `cluster` tests (test_cluster_slurm.py, test_cluster_ray.py): a private network
namespace for the engines' daemons, a Hydra callback that holds one sweep job at a stage so that
the engine can stop it there, the sweep's arguments, and output hashes to compare runs by."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from hydra.experimental.callback import Callback

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
SWEEP_BITS = ("w2", "w4", "w8")


def sweep_args(model_dir: Path, root: Path, *extra: str, bits=SWEEP_BITS) -> list[str]:
    """A 3-job RTN sweep of the tiny random Llama with a 2-window perplexity."""
    return ["-m", "method=rtn", "model=local", f"model.path={model_dir}",
            f"bits={','.join(bits)}", "bits.group_size=32", "eval.max_windows=2",
            "eval.seq_len=64", "eval.stride=64", "eval.speed=false",
            f"hydra.sweep.dir={root}", *extra]


def gate_args(gate_dir: Path, job: int, stage: str = "evaluate") -> list[str]:
    """Overrides that hold job `job` of the sweep at the start of `stage` (first attempt only)."""
    return ["+hydra.callbacks.gate._target_=cluster_helpers.Gate",
            f"+hydra.callbacks.gate.folder={gate_dir}", f"+hydra.callbacks.gate.job={job}",
            f"+hydra.callbacks.gate.stage={stage}"]


class Gate(Callback):
    """Holds one job at the start of a stage until a signal ends it, on its first attempt only:
    writes `<folder>/reached` (the job's pid and SLURM ids) and sleeps; a later attempt (the
    requeued or re-run job) finds the file and passes. Runs in the job's process: Hydra pickles
    its callbacks to remote jobs."""

    def __init__(self, folder: str, job: int, stage: str, hold_s: float = 600) -> None:
        self.folder, self.job, self.stage, self.hold_s = Path(folder), job, stage, hold_s

    def on_job_start(self, config, **kwargs) -> None:
        if int(config.hydra.job.num) != self.job or (self.folder / "reached").exists():
            return
        # deferred: torch; only the held job patches it
        from qrecipe.telemetry import monitor
        stage, gate = monitor.Stages.stage, self

        @contextmanager
        def held(stages, name, memory=False):
            with stage(stages, name, memory=memory):
                if name == gate.stage:
                    gate.folder.mkdir(parents=True, exist_ok=True)
                    ids = {k: os.environ.get(k) for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID",
                                                          "SLURM_ARRAY_TASK_ID")}
                    (gate.folder / "reached").write_text(json.dumps({"pid": os.getpid(), **ids}))
                    time.sleep(gate.hold_s)  # the engine's SIGTERM interrupts this sleep
                yield
        monitor.Stages.stage = held


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def job_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and d.name[:1].isdigit())


# Saved beside the weights but not the same across two runs of one config: gptqmodel writes its
# per-attempt checkpoint folder (offload_to_disk_path, a random name) into both configs, and
# quant_log.csv has a time column.
VOLATILE = {"model/config.json", "model/quantize_config.json", "model/quant_log.csv"}


def outputs_of(run: Path) -> dict:
    """What two runs of one config must share byte for byte, from the run's own records: the
    quantized weights' sha256 and the manifest's hash of every other file under model/."""
    fps = json.loads((run / "fingerprints.json").read_text())
    files = json.loads((run / "manifest.json").read_text())["files"]
    model = {k: v["sha256"] for k, v in files.items()
             if k.startswith("model/") and k not in VOLATILE}
    return {"weights": fps["quantized_weights_sha256"], "model_files": model}


def file_sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


class NetNS:
    """A private network namespace with only a loopback interface: daemons started inside it (and
    every client of theirs) are reachable from nowhere else, whatever address they bind to.
    Needs root (unshare/nsenter); `prefix` is empty where it cannot be made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.prefix: list[str] = []

    def __enter__(self) -> NetNS:
        if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
            return self
        self.path.touch()
        made = subprocess.run(["unshare", f"--net={self.path}", "true"], check=False,
                              timeout=30)
        if made.returncode == 0:
            self.prefix = ["nsenter", f"--net={self.path}"]
            for up in (["ip", "link", "set", "lo", "up"],
                       # slurmdbd binds through getaddrinfo(AI_ADDRCONFIG), which finds nothing
                       # to bind to when 127.0.0.1 is the only address: one more, on lo
                       ["ip", "addr", "add", "10.254.254.1/32", "dev", "lo"]):
                subprocess.run([*self.prefix, *up], timeout=30, check=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.prefix:
            subprocess.run(["umount", str(self.path)], check=False, timeout=30)

    def run(self, cmd, timeout: float, env=None, **kw) -> subprocess.CompletedProcess:
        e = dict(os.environ, **(env or {}))
        return subprocess.run([*self.prefix, *cmd], cwd=ROOT, env=e, capture_output=True,
                              text=True, timeout=timeout, check=False, **kw)

    def popen(self, cmd, log: Path, env=None) -> subprocess.Popen:
        e = dict(os.environ, **(env or {}))
        return subprocess.Popen([*self.prefix, *cmd], cwd=ROOT, env=e, stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
