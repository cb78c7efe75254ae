"""`qrecipe plan --sweep RECIPE OVERRIDES...`: the jobs a sweep (`python -m qrecipe -m
+recipe=RECIPE OVERRIDES`) would launch, each job's memory and quantize time, and the total
GPU-hours and wall time with the launcher's jobs-at-once, before anything is submitted. Each job
passes the same validation as `qrecipe validate` (a rejected one is a row with its reason); the
figures are the planner's (qrecipe/plan/sweep.py). Its own module because validation reaches
the run layer, which `qrecipe plan` alone never loads. No torch."""
from __future__ import annotations

import argparse
import json
from typing import List

from qrecipe.commands import description, recipe_source
from qrecipe.errors import QRecipeError
from qrecipe.inputs.shapes import model_shape
from qrecipe.plan import hardware
from qrecipe.plan import sweep as sweep_plan
from qrecipe.plan.probe import this_machine
from qrecipe.recipes.compose import compose, recipe_overrides, sweep_jobs
from qrecipe.run.validate import resolve_paths, validate



def _sweep_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="qrecipe plan --sweep",
        description=description(__doc__),
        epilog="Example: qrecipe plan --sweep gptq_llama7b method=gptq,awq bits=w2,w3,w4,w8 "
               "hardware=h100_80gb hydra/launcher=slurm_gpu. A launcher override gives the "
               "jobs at once (array_parallelism, n_jobs), its time limit and the RAM it books.")
    ap.add_argument("recipe", help="NAME, PACK/NAME, or a path to a recipe .yaml file")
    ap.add_argument("overrides", nargs="*", help="the sweep's overrides, comma lists included")
    ap.add_argument("--slots", type=int, help="jobs running at once (default: the launcher's "
                                              "array_parallelism or n_jobs, else 1)")
    ap.add_argument("--json", action="store_true", help="print the sweep plan as JSON")
    return ap


def main(argv: List[str]) -> int:
    a = _sweep_parser().parse_args(argv)
    name, ctx = recipe_source(a.recipe)
    with ctx:
        jobs = sweep_jobs(recipe_overrides(name, a.overrides))
        launcher = _launcher(jobs[0])
        slots = launcher["slots"] if a.slots is None else a.slots
        if slots < 1:
            raise QRecipeError("must be at least 1", key="--slots", value=slots)
        gflops = None if launcher["mem_gb"] else this_machine()["gflops"]
        rows = [_job(job, launcher["mem_gb"], gflops) for job in jobs]
    varying = [i for i in range(len(jobs[0])) if len({tuple(j)[i] for j in jobs}) > 1]
    for row, job in zip(rows, jobs):
        row["overrides"] = [job[i] for i in varying] or job[1:]
    plan = {"recipe": name, "launcher": launcher["name"], "time_limit_min": launcher["timeout"],
            "mem_gb": launcher["mem_gb"],
            "hardware": next((r["hardware"] for r in rows if "hardware" in r), "?"),
            "jobs": rows,
            "totals": sweep_plan.totals(rows, slots, launcher["timeout"],
                                        launcher["mem_gb"] and launcher["mem_gb"] * 10 ** 9)}
    print(json.dumps(plan, indent=2) if a.json else sweep_plan.render(plan))
    return 0


def _launcher(job: List[str]) -> dict:
    """What the sweep's launcher config says about jobs at once, time and RAM per job."""
    h = compose(job, with_hydra=True).hydra
    lc, name = h.launcher, h.runtime.choices.get("hydra/launcher") or "basic"
    slots = lc.get("array_parallelism") or lc.get("n_jobs") or 1
    return {"name": name, "slots": int(slots), "timeout": lc.get("timeout_min"),
            "mem_gb": lc.get("mem_gb")}


def _job(job: List[str], mem_gb, gflops) -> dict:
    """One job's figures, or its one-line rejection."""
    try:
        cfg = compose(job)
        resolve_paths(cfg)
        validate(cfg, here=False, hub=False)  # the jobs run where the hub is
        prof = hardware.of_config(cfg.hardware, mem_gb)
        figures = sweep_plan.job_figures(cfg, model_shape(cfg.model), prof, gflops)
        return {**figures, "hardware": prof.label}
    except QRecipeError as e:
        return {"error": str(e)}
