"""Report: one run's report.md, the sweep summary (CSV, Markdown) and its charts.
`qrecipe-report DIR...` / `python -m qrecipe.report DIR...` rebuild a sweep's summary."""
from qrecipe.report.runs import main  # `qrecipe-report`'s entry point: existing installs name it

__all__ = ["main"]
