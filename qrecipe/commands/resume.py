"""`qrecipe resume DIR`: finish an interrupted run in its own directory.

The directory's recipe.lock.yaml is the config (nothing is re-composed), and the runner skips
every stage whose marker verifies (qrecipe/run/stages.py: sealed by this user, and the files it
vouches for unchanged; a saved quantized model is never quantized again; gptqmodel continues
from its last per-layer checkpoint). A complete run is left as it is. Re-running the frozen
config into the same directory (`python -m qrecipe --config-dir DIR --config-name recipe.lock
hydra.run.dir=DIR`) does the same.

DIR may come from someone else: one that is or holds a symbolic link is refused before anything
is read or written, and the lock is read through the safe loader (qrecipe/recipes/lock.py: no
resolver runs, no `cache`/`force` from it is used).
"""
from __future__ import annotations

import argparse
import logging.config
import sys
from pathlib import Path

from omegaconf import OmegaConf

from qrecipe.boundary.rundir import check_no_symlinks
from qrecipe.errors import QRecipeError
from qrecipe.paths import config_dir
from qrecipe.recipes.lock import check_lock
from qrecipe.record.outputs import LOCK, run_state
from qrecipe.run import runner
from qrecipe.run.rundir import hydra_run_log

# What Hydra applies to a fresh run (conf/config.yaml: hydra/job_logging: qrecipe); a resumed
# run applies the same file, so both tell the same story: qrecipe's lines and bars on the
# terminal, the libraries' output in library.log, run.log without frames, the final block last.
JOB_LOGGING = Path("hydra") / "job_logging" / "qrecipe.yaml"


def _log_to(run_dir: Path) -> None:
    """The logging of a Hydra run, its run.log in run_dir (appended; never through a symbolic
    link)."""
    spec = OmegaConf.load(config_dir() / JOB_LOGGING)
    spec.handlers.file.filename = hydra_run_log(str(run_dir))  # Hydra's resolver, called here
    logging.config.dictConfig(OmegaConf.to_container(spec, resolve=True))


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="qrecipe resume",
                                 description="Finish an interrupted run in its directory.")
    ap.add_argument("dir", type=Path, help="the run directory (holds recipe.lock.yaml)")
    a = ap.parse_args(argv)
    check_no_symlinks(a.dir, key="DIR")  # before anything in it is read or written
    state = run_state(a.dir)
    if state.complete:
        print(f"already complete: {a.dir} (nothing to resume)", file=sys.stderr)
        return 0
    if not state.incomplete:
        raise QRecipeError(f"not a qrecipe run directory ({state.status}: no {LOCK})",
                           key="DIR", value=str(a.dir))
    cfg = check_lock(a.dir / LOCK)
    _log_to(a.dir)  # the runner's first line says what it resumes
    status = runner.run_job(cfg, a.dir, keep_failed_dir=True)
    if status == "interrupted":
        return runner.interrupt_exit_code
    return {"ok": 0, "user_error": 2}.get(status, 1)
