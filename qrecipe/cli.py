"""`python -m qrecipe [+recipe=NAME] [overrides]`: compose with Hydra, then hand over to the runner.
`qrecipe COMMAND ...` (a first argument naming a command in commands/__init__.py) runs that
command instead; `qrecipe help [COMMAND]` and `qrecipe --version` are spellings of those
(commands.help_argv), and a shell-completion query is answered with the commands too
(commands/completion.py) before Hydra adds its own.

Exit codes: 0 success; 2 a problem the user can fix (bad YAML, wrong type, unsupported bits, missing
file or package), printed as one line without a traceback; 1 a bug in qrecipe (traceback in
run.log and on stderr); 141 the reader of stdout went away (`qrecipe show X | head`): quietly,
as Unix tools end on SIGPIPE. Importing this module must not import torch: `--help` and
`--cfg job` stay fast.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from qrecipe.boundary.yamlfile import printable
from qrecipe.commands import completion, help_argv, is_command, run_command
from qrecipe.errors import QRecipeError
from qrecipe.paths import config_dir
from qrecipe.recipes import schema
from qrecipe.recipes.hydra_errors import (is_config_error, null_group, one_line,
                                          recipe_without_plus)
from qrecipe.recipes.routes import hydra_argv
from qrecipe.report import sweep as sweep_report
from qrecipe.report.runs import DRY_REJECTED, DRY_VALID
from qrecipe.run import rundir, runner

log = logging.getLogger("qrecipe")
schema.register()
# Job statuses that are the user's to fix (exit 2); anything else a sweep lost is exit 1.
USER_ERRORS = ("user_error", DRY_REJECTED)


def _dirname(overrides: str) -> str:
    """A sweep job's folder name from its overrides: one path component however the values
    look (model.path=/models/x would otherwise nest folders), and short enough for any
    filesystem (long ones keep a readable head and a hash of the whole)."""
    name = overrides.replace("/", "_").replace("\\", "_") or "job"
    if len(name) > 120:
        name = name[:100] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return name


OmegaConf.register_new_resolver("qrecipe_dirname", _dirname, replace=True)
rundir.register_resolvers()  # Hydra never rewrites the record of an existing run

# Set by jobs of this process: a sweep that lost jobs must not exit 0 (jobs run elsewhere, by
# submitit or SLURM: their report rows say it, report/sweep.py LAST).
_FAILED_JOBS: list[str] = []


class _ErrorLine:
    """sys.stderr, written through, keeping the last `error: ` line: the runner's one-line
    message of a rejected job. A sweep job returns it to the report callback, for the jobs whose
    directory holds no error.json to say it (a dry run writes nothing)."""

    def __init__(self, stream) -> None:
        self.stream, self.line, self._part = stream, None, ""

    def write(self, text: str) -> int:
        # progress bars redraw with \r and no newline: a line is what either ends, and an
        # unfinished one is kept only as long as an error line could be
        *lines, part = (self._part + text).replace("\r", "\n").split("\n")
        self._part = part[-4096:]
        for line in lines:
            if line.startswith("error: "):
                self.line = line[len("error: "):]
        return self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_entry(cfg: DictConfig) -> Optional[Dict[str, Any]]:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    errors = _ErrorLine(sys.stderr)
    if multirun:
        sys.stderr = errors
    try:
        status = runner.run_job(cfg, keep_failed_dir=multirun)
    finally:
        sys.stderr = errors.stream
    if status == "interrupted":  # Ctrl-C / SIGTERM stop a sweep too
        sys.exit(runner.interrupt_exit_code)
    if not multirun and status != "ok":
        # A single run ends with the runner's one-line message and its exit code.
        if status != "user_error":
            _FAILED_JOBS.append(status)  # main() must not read this exit 1 as Hydra's
        sys.exit(2 if status == "user_error" else 1)
    if status != "ok":  # in a sweep a failed job is a row of the report, not its end
        _FAILED_JOBS.append(status)
    # Hydra hands it to the report callback (qrecipe/report/sweep.py) as the job's return value.
    return {"status": status, "error": errors.line, "dry_run": bool(cfg.get("dry_run", False))}


def main() -> None:
    try:
        try:
            _dispatch(sys.argv[1:])
        finally:
            sys.stdout.flush()  # here, not at exit: a closed pipe is caught below
    except BrokenPipeError:
        # `qrecipe show X | head`: the reader has what it wanted. Nothing more is written
        # (the interpreter's last flush goes to /dev/null), no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


def _dispatch(args: List[str]) -> None:
    args = help_argv(args) or args
    if is_command(args):
        sys.exit(run_command(args))
    if completion.is_query(args):
        words, hydra_too = completion.answer(os.environ.get("COMP_LINE", ""))
        print("\n".join(words))
        if not hydra_too:
            sys.exit(0)
    mistake = recipe_without_plus(args) or null_group(args)
    if mistake:
        print(f"error: {printable(mistake)}", file=sys.stderr)
        sys.exit(2)
    try:
        # --config-dir, --config-path, hydra.searchpath: checked before Hydra sees any folder
        route = hydra_argv(args)
    except QRecipeError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)
        sys.exit(2)
    argv, sys.argv = sys.argv, [sys.argv[0], *route.argv]
    try:
        _compose_and_run()
    finally:
        sys.argv = argv
        route.cleanup()


def _compose_and_run() -> None:
    # Hydra raises composition errors to us (one line below) unless the user asked for its
    # full error output.
    full_error = "HYDRA_FULL_ERROR" in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    _FAILED_JOBS.clear()
    sweep_report.LAST.clear()
    try:
        _hydra_entry()
    except SystemExit as e:
        # Hydra exits 1 when composition fails (unknown key, wrong type, unknown recipe); the job
        # itself never lets an exception reach Hydra, so exit 1 here always means a user error.
        if e.code == 1 and "crash" not in _FAILED_JOBS:
            sys.exit(2)
        raise
    except RecursionError:
        if full_error:
            raise
        # a defaults list that includes itself in a way hydra_source could not follow
        print("error: composing the config recursed without end: a recipe includes itself "
              "through its defaults list", file=sys.stderr)
        sys.exit(2)
    except (QRecipeError, ValueError) as e:  # Hydra's own argument errors (e.g. -m with --cfg)
        print(f"error: {printable(one_line(e) if is_config_error(e) else str(e))}",
              file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        if not full_error and _engine_of(e):
            _lost_job(e)
        if full_error or not is_config_error(e):
            raise
        print(f"error: {printable(one_line(e))}", file=sys.stderr)
        sys.exit(2)
    finally:
        if not full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    _end_of_sweep()


def _engine_of(e: BaseException) -> Optional[str]:
    """The cluster engine whose launcher raised e (submitit, ray), if one did: its launcher
    gives up on the whole sweep when it loses a job for good (cancelled, node failure without
    requeue, retries spent), before Hydra's end-of-sweep callback runs."""
    top = type(e).__module__.split(".")[0]
    return top if top in ("submitit", "ray") else None


def _lost_job(e: BaseException) -> None:
    """One line instead of the launcher's traceback: which engine lost a job and why (its first
    line), the report of the jobs that finished, and that the same command resumes."""
    root = sweep_report.LAST.get("root")
    if root is not None:
        sweep_report.write_report(root, sweep_report.LAST.get("plots", True))
    summary = sweep_report.LAST.get("summary")
    why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    where = f"the jobs that finished are in {summary}" if summary else \
        f"no job finished{f' under {root}' if root else ''}"
    print(f"error: {_engine_of(e)} lost a sweep job for good ({type(e).__name__}: "
          f"{printable(why)}); {where}; the same command again resumes the sweep: complete "
          "jobs are skipped, interrupted ones resume", file=sys.stderr)
    sys.exit(1)


def _end_of_sweep() -> None:
    """A sweep with failed jobs exits non-zero (2 when every failure is the user's), its last
    line naming the report where one was written."""
    report = sweep_report.LAST
    failed = list(_FAILED_JOBS) or [r["status"] for r in report.get("rows", [])
                                    if r["status"] not in ("complete", DRY_VALID)]
    if not failed:
        return
    summary = report.get("summary")
    where = f"see {summary}" if summary and Path(summary).is_file() else \
        "no sweep report was written"
    print(f"error: {len(failed)} job(s) of the sweep failed; {where}", file=sys.stderr)
    sys.exit(2 if all(s in USER_ERRORS for s in failed) else 1)


if __name__ == "__main__":
    main()
