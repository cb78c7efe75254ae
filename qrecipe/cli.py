"""`python -m qrecipe [+recipe=NAME] [overrides]`: compose with Hydra, then hand over to the runner.
`qrecipe COMMAND ...` (a first argument naming a command in commands.py) runs that command instead.

Exit codes: 0 success; 2 a problem the user can fix (bad YAML, wrong type, unsupported bits, missing
file or package), printed as one line without a traceback; 1 a bug in qrecipe (traceback in
run.log and on stderr). Importing this module must not import torch: `--help` and `--cfg job`
stay fast.
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from qrecipe.errors import QRecipeError
from qrecipe.paths import config_dir
from qrecipe.recipes import schema
from qrecipe.run import rundir

log = logging.getLogger("qrecipe")
schema.register()


def _dirname(overrides: str) -> str:
    """A sweep job's folder name from its overrides: one path component however the values
    look (model.path=/models/x would otherwise nest folders), and short enough for any
    filesystem (long ones keep a readable head and a hash of the whole)."""
    import hashlib
    name = overrides.replace("/", "_").replace("\\", "_") or "job"
    if len(name) > 120:
        name = name[:100] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return name


OmegaConf.register_new_resolver("qrecipe_dirname", _dirname, replace=True)
rundir.register_resolvers()  # Hydra never rewrites the record of an existing run

# Set by jobs of this process: a sweep that lost jobs must not exit 0.
_FAILED_JOBS: list[str] = []


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_entry(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from qrecipe.run.runner import run_job

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    status = run_job(cfg, keep_failed_dir=multirun)
    if status == "ok":
        return
    if status == "interrupted":  # Ctrl-C / SIGTERM stop a sweep too
        from qrecipe.run import runner
        sys.exit(runner.interrupt_exit_code)
    if not multirun:
        # A single run ends with the runner's one-line message and its exit code.
        if status != "user_error":
            _FAILED_JOBS.append(status)  # main() must not read this exit 1 as Hydra's
        sys.exit(2 if status == "user_error" else 1)
    # In a sweep a failed job is a row of the report, not the end of the sweep.
    _FAILED_JOBS.append(status)


def main() -> None:
    import os

    from qrecipe.commands import is_command, run_command
    from qrecipe.recipes.hydra_errors import is_config_error, one_line

    if is_command(sys.argv[1:]):
        sys.exit(run_command(sys.argv[1:]))
    # Hydra raises composition errors to us (one line below) unless the user asked for its
    # full error output.
    full_error = "HYDRA_FULL_ERROR" in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    _FAILED_JOBS.clear()
    try:
        _hydra_entry()
    except SystemExit as e:
        # Hydra exits 1 when composition fails (unknown key, wrong type, unknown recipe); the job
        # itself never lets an exception reach Hydra, so exit 1 here always means a user error.
        if e.code == 1 and "crash" not in _FAILED_JOBS:
            sys.exit(2)
        raise
    except (QRecipeError, ValueError) as e:  # Hydra's own argument errors (e.g. -m with --cfg)
        if full_error or not (isinstance(e, QRecipeError) or is_config_error(e)):
            if not isinstance(e, (QRecipeError, ValueError)):
                raise
        print(f"error: {one_line(e) if is_config_error(e) else e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        if full_error or not is_config_error(e):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    finally:
        if not full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    if _FAILED_JOBS:
        print(f"error: {len(_FAILED_JOBS)} job(s) of the sweep failed; see the sweep report",
              file=sys.stderr)
        sys.exit(2 if all(s == "user_error" for s in _FAILED_JOBS) else 1)


if __name__ == "__main__":
    main()
