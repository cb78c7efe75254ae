"""Hydra callback that writes the comparison report into the sweep root when a multirun ends.
Failed jobs are rows with their error (the runner leaves error.json), not a lost sweep; a job
that leaves no directory to say so (a dry run, valid or rejected) is recorded as its row when it
ends (report/runs.py: job_row), so a dry-run sweep has its report too."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from qrecipe.report.runs import (
    DRY_VALID,
    find_runs,
    job_row,
    record_job,
    recorded_jobs,
    write_summary,
)

log = logging.getLogger("qrecipe")
# The last report this process wrote: {"summary": path, "rows": [...]}. The command line reads it
# to end the sweep (qrecipe/cli.py): its jobs may have run in other processes (submitit, SLURM).
LAST: Dict[str, Any] = {}


class SweepReport(Callback):
    def __init__(self, plots: bool = True) -> None:
        self.plots = plots

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        row = job_row(config, job_return)
        if row is not None:
            record_job(Path(config.hydra.sweep.dir), row)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # the sweep's root, for a report of what finished when the launcher loses a job
        LAST.update(root=Path(config.hydra.sweep.dir), plots=self.plots)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_report(Path(config.hydra.sweep.dir), self.plots)


def write_report(root: Path, plots: bool = True) -> None:
    """The comparison report of the runs under root (and the jobs recorded there), if any."""
    runs, recorded = find_runs([root]), recorded_jobs(root)
    if not runs and not recorded:
        return
    rows = write_summary(root, runs, plots=plots, recorded=recorded)
    LAST.update(summary=root / "summary.md", rows=rows)
    done = sum(r["status"] == "complete" for r in rows)
    valid = sum(r["status"] == DRY_VALID for r in rows)
    what = f"{valid}/{len(rows)} jobs valid (dry run)" if valid else \
        f"{done}/{len(rows)} jobs complete"
    log.info("sweep report: %s -> %s", what, root / "summary.md")
