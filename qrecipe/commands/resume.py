"""`qrecipe resume DIR`: finish an interrupted run in its own directory.

The directory's recipe.lock.yaml is the config (nothing is re-composed), and the runner skips
every stage whose marker says it finished (a saved quantized model is never quantized again;
gptqmodel continues from its last per-layer checkpoint). A complete run is left as it is.
Re-running the frozen config into the same directory (`python -m qrecipe --config-dir DIR
--config-name recipe.lock hydra.run.dir=DIR`) does the same.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from qrecipe.errors import QRecipeError
from qrecipe.record.outputs import LOCK, run_state


def load_lock(run_dir: Path):
    """The frozen config of a run directory, typed by the schema (method by its own)."""
    from omegaconf import OmegaConf

    from qrecipe.recipes.schema import METHOD_SCHEMAS, Config

    try:
        body = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / LOCK))
    except Exception as e:
        raise QRecipeError(f"cannot read {LOCK} ({type(e).__name__})", key="DIR",
                           value=str(run_dir)) from None
    body.pop("defaults", None)
    body.pop("hydra", None)
    method = body.pop("method", {}) or {}
    cfg = OmegaConf.merge(OmegaConf.structured(Config), body)
    schema = METHOD_SCHEMAS.get(method.get("name"))
    if schema is None:
        raise QRecipeError(f"{LOCK} names an unknown method", key="method.name",
                           value=method.get("name"), allowed=sorted(METHOD_SCHEMAS))
    cfg.method = OmegaConf.merge(OmegaConf.structured(schema), method)
    return cfg


def _log_to(run_dir: Path) -> None:
    """The same two log sinks a Hydra run has: short lines on stderr, run.log appended."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
    file = logging.FileHandler(Path(run_dir) / "run.log")
    file.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    root.addHandler(console)
    root.addHandler(file)


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="qrecipe resume",
                                 description="Finish an interrupted run in its directory.")
    ap.add_argument("dir", type=Path, help="the run directory (holds recipe.lock.yaml)")
    a = ap.parse_args(argv)
    state = run_state(a.dir)
    if state.complete:
        print(f"already complete: {a.dir} (nothing to resume)", file=sys.stderr)
        return 0
    if not state.incomplete:
        raise QRecipeError(f"not a qrecipe run directory ({state.status}: no {LOCK})",
                           key="DIR", value=str(a.dir))
    cfg = load_lock(a.dir)
    print(f"resuming {a.dir}: {state.describe()}", file=sys.stderr)
    _log_to(a.dir)
    from qrecipe.run import runner
    status = runner.run_job(cfg, a.dir, keep_failed_dir=True)
    if status == "interrupted":
        return runner.interrupt_exit_code
    return {"ok": 0, "user_error": 2}.get(status, 1)
