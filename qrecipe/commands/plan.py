"""`qrecipe plan MODEL [hardware=PROFILE] [--context N] [--batch B] [--json] [--from DIR...]`:
will this model fit this device, in which format, how long quantizing takes, and which recipe to
start from. Reads metadata only (config.json or a GGUF header); never a weight, never torch.
The plan and its --json form: qrecipe/plan/build.py. `qrecipe plan --probe`: this machine's
float32 GEMM rate, the figure a CPU measurement records (qrecipe/plan/probe.py).

`qrecipe plan --sweep RECIPE OVERRIDES...`: the jobs a sweep (`python -m qrecipe -m ...` with the
same overrides) would launch, each job's memory and quantize time, and the total GPU-hours and
wall time with the launcher's jobs-at-once, before anything is submitted
(qrecipe/commands/plan_sweep.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List

from qrecipe.errors import QRecipeError
from qrecipe.paths import config_dir
from qrecipe.plan import hardware
from qrecipe.plan.build import full_plan
from qrecipe.plan.probe import this_machine
from qrecipe.plan.render import render


def _parser() -> argparse.ArgumentParser:
    models = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml") if p.stem != "local")
    ap = argparse.ArgumentParser(
        prog="qrecipe plan",
        description="Will MODEL fit this hardware, in which format, how long does quantizing "
                    "take, and which recipe to start from. Reads config.json or a GGUF header "
                    "only: no weights are downloaded or read.",
        epilog="MODEL: a hub id (org/name; only config.json is fetched), a local folder with "
               "config.json, a .gguf file (or pkg://PACKAGE/FILE.gguf), or a shipped model "
               f"config name ({', '.join(models)}). PROFILE: "
               f"{', '.join(hardware.names())} (cpu: this machine). "
               "Sizes are decimal GB (1e9 bytes).")
    ap.add_argument("model", metavar="MODEL", nargs="?",
                    help="hub id, local folder, .gguf file or shipped model config (below)")
    ap.add_argument("hardware", nargs="?", default="hardware=cpu", metavar="hardware=PROFILE",
                    help="device to plan for (default: cpu, this machine's RAM)")
    ap.add_argument("--context", type=int, default=2048, help="tokens of context (default 2048)")
    ap.add_argument("--batch", type=int, default=1, help="sequences at once (default 1)")
    ap.add_argument("--group-size", type=int, default=128,
                    help="group size of the integer formats (default 128; -1 per channel)")
    ap.add_argument("--samples", type=int, default=128, help="calibration rows (default 128)")
    ap.add_argument("--seq-len", type=int, default=512,
                    help="calibration tokens per row (default 512)")
    ap.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                    help="dtype of unquantized tensors (default: the model's)")
    ap.add_argument("--revision", default="main", help="hub revision (default main)")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    ap.add_argument("--from", dest="from_dirs", nargs="+", type=Path, metavar="DIR",
                    help="run or sweep output dirs: rank their measured runs instead of rules")
    ap.add_argument("--sweep", metavar="RECIPE OVERRIDE", nargs="+",
                    help="first argument: plan the sweep `python -m qrecipe -m +recipe=RECIPE "
                         "OVERRIDES` would launch (see `qrecipe plan --sweep --help`)")
    ap.add_argument("--probe", action="store_true",
                    help="print this machine's float32 GEMM rate (what CPU times are scaled by; "
                         "record it as probe_gflops beside a CPU measurement) and stop")
    return ap


def main(argv: List[str]) -> int:
    ap = _parser()
    a = ap.parse_args(argv)
    if a.sweep:  # `plan --sweep ...` is qrecipe/commands/plan_sweep.py (commands/__init__.py)
        ap.error("--sweep comes first: qrecipe plan --sweep RECIPE OVERRIDES...")
    if a.probe:
        print(json.dumps(this_machine(), indent=2))
        return 0
    if a.model is None:
        ap.error("MODEL is required (or --probe)")
    if not a.hardware.startswith("hardware="):
        raise QRecipeError("expected hardware=PROFILE", key="hardware", value=a.hardware,
                           allowed=", ".join(hardware.names()))
    for k in ("context", "batch", "samples", "seq_len"):
        if getattr(a, k) < 1:
            raise QRecipeError("must be at least 1", key=f"--{k.replace('_', '-')}",
                               value=getattr(a, k))
    plan = full_plan(a.model, a.hardware.split("=", 1)[1], a.context, a.batch, a.group_size,
                     a.samples, a.seq_len, a.dtype, a.revision, a.from_dirs)
    print(json.dumps(plan, indent=2) if a.json else render(plan))  # | head: cli.main
    return 0

