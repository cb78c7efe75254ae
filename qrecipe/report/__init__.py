"""Report: one run's report.md, the sweep summary (CSV, Markdown) and its charts.
`qrecipe-report DIR...` / `python -m qrecipe.report DIR...` rebuild a sweep's summary."""


def main(argv=None) -> int:
    """Entry point of `qrecipe-report` (kept at this name for existing installs)."""
    from qrecipe.report.runs import main as run_main
    return run_main(argv)
