"""Hydra callback that writes the comparison report into the sweep root when a multirun ends.
Failed jobs are rows with their error (the runner leaves error.json), not a lost sweep."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("qrecipe")


class SweepReport(Callback):
    def __init__(self, plots: bool = True) -> None:
        self.plots = plots

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from qrecipe.report.runs import find_runs, write_summary

        root = Path(config.hydra.sweep.dir)
        runs = find_runs([root])
        if not runs:
            return
        rows = write_summary(root, runs, plots=self.plots)
        done = sum(r["status"] == "complete" for r in rows)
        log.info("sweep report: %d/%d jobs complete -> %s", done, len(rows), root / "summary.md")
