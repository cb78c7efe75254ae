"""The compiled kernels one CUDA job will call, built in a child process from the moment the job
is validated, while it imports its libraries, loads the model and quantizes: on a machine whose
image skipped `qrecipe kernels build`, a job then waits for a build only where the child has
not finished it yet, instead of compiling each kernel in line when it first calls it (the
GPTQ block update at the first layer, ExLlamaV2 or Marlin at the reload before evaluation).

Why two processes can share a build: gptqmodel 7.6 compiles under a cross-process flock
(gptqmodel/utils/cpp.py ``_cross_process_build_lock``; a waiter waits up to
GPTQMODEL_TORCH_OPS_LOCK_TIMEOUT, 600 s by default) and loads a finished library from the cache
folder (GPTQMODEL_TORCH_EXTENSIONS_DIR, which the child inherits from the job). The job's own
first call therefore finds the child's library, or waits on the lock for the build in progress;
no kernel is compiled twice, and a child that fails leaves the job to build as it did before.

``needed`` says what a job will call (the kernel its reload resolves, not every kernel `auto`
may try: `kernels build` prebuilds those). ``start`` runs the child, ``Child.finish`` collects
it. The child itself is ``python -m qrecipe.kernels.background NAME ...``: gptqmodel's and
nvcc's output go to its stderr (the job's library.log), one JSON line per kernel to stdout.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from qrecipe.errors import QRecipeError
from qrecipe.kernels.build import (BY_NAME, QUANTIZE, QUANTIZE_METHODS, Extension, Job,
                                   artefacts, build_one, call_builder, extensions_of,
                                   import_builders)
from qrecipe.kernels.table import resolve

# How long finish() gives a child that got SIGTERM before it kills it (ninja removes the
# outputs of the commands it stops; gptqmodel drops a dead builder's stale lock next time).
STOP_GRACE_S = 10.0
# How long finish() waits for a child that reported every kernel to exit on its own: its
# interpreter still tears down torch and CUDA when the job, which waited on the last build's
# lock, is already done (seen on an H100: the job ended in that window and stopped the child).
EXIT_GRACE_S = 30.0


def needed(fmt: str, method: Optional[str], reload: bool, allow_jit: bool, kernel: str,
           cc: Optional[float], facts: Dict[str, Any], dtype: str) -> Tuple[Job, ...]:
    """The compiled kernels a CUDA job writing a `fmt` checkpoint will call, in the order it
    calls them: quantizing's (method: the method it quantizes with, None when it reuses a saved
    model), then the reload kernel `hardware.kernel` resolves to for the checkpoint (facts:
    resolve()'s sym, bits, group_size, emulated; dtype: the reload's, which picks Marlin's
    build). Empty without allow_jit (nothing is compiled then)."""
    if not allow_jit:
        return ()
    uses: Dict[str, str] = {}
    if method in QUANTIZE_METHODS:
        for n in QUANTIZE.get(fmt, ()):
            uses[n] = f"quantize {fmt}"
    if reload:
        try:
            k = resolve(fmt, "cuda", kernel, allow_jit=True, cc=cc, dtype=dtype, **facts)
        except QRecipeError:  # the reload refuses it the same way, with the job's own message
            k = None
        if k is not None and k.jit and not k.download:
            for e in extensions_of(fmt, k.name):
                if e.dtype is None or e.dtype == dtype:
                    uses.setdefault(e.name, f"reload {fmt} {k.name}")
    return tuple(Job(BY_NAME[n], (u,)) for n, u in uses.items())


def missing(jobs: Sequence[Job], root: Path) -> Tuple[Job, ...]:
    """The jobs whose kernel has no library in the cache under root yet."""
    return tuple(j for j in jobs if not artefacts(root, j.ext))


@dataclass
class Child:
    """A running child that builds `jobs` one after another; its result lines are read as they
    come (a thread), so finish() knows whether it still builds or only exits."""
    proc: subprocess.Popen
    jobs: Tuple[Job, ...]
    started: float = field(default_factory=time.perf_counter)
    lines: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        if self.proc.stdout:
            with self.proc.stdout as pipe:
                for line in pipe:
                    self.lines.append(line)

    def reported(self) -> Dict[str, Dict[str, Any]]:
        """name -> the child's result line, for the kernels it has finished."""
        got = {}
        for line in list(self.lines):
            try:
                r = json.loads(line)
                got[r["name"]] = r
            except (ValueError, KeyError, TypeError):
                continue  # not one of the child's result lines
        return got

    def finish(self) -> Dict[str, Any]:
        """The child's results: {"kernels": [{name, uses, status, seconds, reason}], "wall_s",
        "stopped", "exit_code"}. A child that reported every kernel gets EXIT_GRACE_S to exit;
        one still building is stopped ("stopped": the job no longer needs what is left). A
        kernel the child never reported is "not built"."""
        if self.proc.poll() is None and len(self.reported()) >= len(self.jobs):
            try:
                self.proc.wait(EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        stopped = self.proc.poll() is None
        if stopped:
            _stop(self.proc)
        self._reader.join(STOP_GRACE_S)  # the pipe closes with the child
        got = self.reported()
        rows = [{"name": j.ext.name, "uses": ", ".join(j.uses),
                 **{k: v for k, v in got.get(j.ext.name, {"status": "not built"}).items()
                    if k != "name"}} for j in self.jobs]
        return {"kernels": rows, "wall_s": round(time.perf_counter() - self.started, 1),
                "stopped": stopped, "exit_code": self.proc.returncode}


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's process group (nvcc and ninja with it), SIGKILL after the grace."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def start(jobs: Sequence[Job]) -> Optional[Child]:
    """The child building jobs, in its own process group; None when there is nothing to build.
    Its environment is this process's (the kernel cache, the GPUs it may see)."""
    if not jobs:
        return None
    proc = subprocess.Popen([sys.executable, "-m", "qrecipe.kernels.background",
                             *(j.ext.name for j in jobs)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    return Child(proc, tuple(jobs))


def run(names: Sequence[str], root: Path, results: TextIO,
        call: Callable[[Extension], Tuple[bool, str]] = call_builder) -> int:
    """Build each named kernel through gptqmodel (call), in order, one JSON line of its result
    to `results` as soon as it is done; 0 when every one is built."""
    jobs = [Job(BY_NAME[n], ()) for n in names]
    if call is call_builder:
        import_builders(jobs)
    failed = 0
    for j in jobs:
        r = build_one(j.ext, root, call)
        failed += r.status == "failed"
        results.write(json.dumps({"name": j.ext.name, "status": r.status,
                                  "seconds": round(r.seconds, 1), "reason": r.reason}) + "\n")
        results.flush()
    return 1 if failed else 0


def main(names: List[str]) -> int:
    """The child: result lines to the original stdout (a pipe to the job); everything else
    printed, gptqmodel's and nvcc's output, to stderr (the job's library.log)."""
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return run(names, Path(os.environ["GPTQMODEL_TORCH_EXTENSIONS_DIR"]), results)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
