"""Kept so that `python -m qrecipe.plan_report GPU_BENCH.json` works as before; the module is
qrecipe.plan.compare. Nothing inside qrecipe imports this module."""
import sys

from qrecipe.plan.compare import main

if __name__ == "__main__":
    sys.exit(main())
