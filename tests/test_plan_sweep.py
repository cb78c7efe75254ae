"""`qrecipe plan --sweep`: the jobs a sweep would launch, each with the planner's own figures,
and the totals a cluster user books, before anything is submitted. No torch."""
import json
import subprocess
import sys

import pytest

from qrecipe.plan.sweep import _wall, totals
from qrecipe.recipes.compose import sweep_jobs


def plan_sweep(*args):
    p = subprocess.run([sys.executable, "-m", "qrecipe", "plan", "--sweep", *args],
                       capture_output=True, text=True, timeout=120)
    return p


def test_jobs_are_the_cartesian_product_in_hydras_order():
    jobs = sweep_jobs(["+recipe=r", "method=gptq,awq", "bits=w3,w4", "seed=range(0,2)"])
    assert len(jobs) == 8
    assert jobs[0] == ["+recipe=r", "method=gptq", "bits=w3", "seed=0"]
    assert jobs[1] == ["+recipe=r", "method=gptq", "bits=w3", "seed=1"]
    assert jobs[-1] == ["+recipe=r", "method=awq", "bits=w4", "seed=1"]


def test_wall_time_puts_the_longest_job_first_on_the_earliest_free_slot():
    assert _wall([3, 3, 2, 2, 2], 2) == 7
    assert _wall([3, 3, 2, 2, 2], 1) == 12
    assert _wall([5, 1, 1], 10) == 5
    assert _wall([], 4) == 0


def test_totals_count_gpu_hours_and_flag_launcher_limits():
    jobs = [{"seconds": 3600, "gpus": 1, "peak_bytes": 10, "host_bytes": 200},
            {"seconds": 7200, "gpus": 2, "peak_bytes": 10, "host_bytes": 50},
            {"seconds": None, "gpus": 1, "peak_bytes": 10, "host_bytes": 50},
            {"error": "bits.width=3: ..."}]
    t = totals(jobs, slots=2, time_limit_min=90, mem_limit_bytes=100)
    assert t["gpu_hours"] == 5.0 and t["unknown_time"] == 1 and t["rejected"] == 1
    assert t["wall_seconds"] == 7200 and t["serial_seconds"] == 10800
    assert [j.get("over_time_limit") for j in jobs[:3]] == [False, True, False]
    assert [j.get("over_memory_limit") for j in jobs[:3]] == [True, False, False]


def test_a_70b_sweep_on_slurm_has_the_plans_own_figures(tmp_path):
    # AWQ through gptqmodel (4 bits only): one job rejected, as a sweep would reject it
    p = plan_sweep("gptq_llama7b", "model=llama2_70b", "method=gptq,awq", "bits=w3,w4",
                   "method.backend=gptqmodel", "hardware=h100_80gb", "hydra/launcher=slurm_gpu",
                   "--json")
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    jobs, t = plan["jobs"], plan["totals"]
    assert [j.get("overrides") for j in jobs] == [
        ["method=gptq", "bits=w3"], ["method=gptq", "bits=w4"],
        ["method=awq", "bits=w3"], ["method=awq", "bits=w4"]]
    assert jobs[2]["error"].startswith("bits.width=3: awq via gptqmodel does not support")
    assert (t["jobs"], t["valid"], t["rejected"], t["slots"]) == (4, 3, 1, 16)
    assert plan["time_limit_min"] == 240 and plan["hardware"] == "H100 80 GB"
    gptq = jobs[1]
    # the single-model plan's figures for the same model, format, method and calibration
    q = subprocess.run([sys.executable, "-m", "qrecipe", "plan", "llama2_70b",
                        "hardware=h100_80gb", "--samples", "128", "--seq-len", "2048",
                        "--json"], capture_output=True, text=True, timeout=120)
    row = json.loads(q.stdout)["rows"]["w4"]
    one = next(x for x in row["quantize"] if (x["method"], x["backend"]) == ("gptq", "gptqmodel"))
    assert gptq["peak_bytes"] == one["peak_bytes"] and gptq["seconds"] == one["seconds"]
    assert gptq["host_bytes"] > 64e9 and gptq["over_memory_limit"]  # 70B fp16 offloaded > 64 GB
    assert t["gpu_hours"] == pytest.approx(
        sum(j["seconds"] * j["gpus"] for j in jobs if "error" not in j) / 3600, abs=1e-3)


def test_text_plan_says_totals_and_limits_without_torch():
    code = ("import sys, runpy; sys.argv = ['qrecipe', 'plan', '--sweep', 'gptq_llama7b', "
            "'model=llama2_70b', 'method=gptq,awq', 'hardware=h100_80gb', "
            "'hydra/launcher=slurm_gpu', 'hydra.launcher.timeout_min=60']\n"
            "try:\n    runpy.run_module('qrecipe', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stderr.strip().endswith("no torch"), p.stderr
    out = p.stdout
    assert "sweep of gptq_llama7b: 2 jobs (2 valid, 0 rejected) on H100 80 GB" in out
    # AWQ on 70B: 84 min with the recipe's 128 x 2048 tokens (the 80 GB profiles' figure)
    assert "launcher's time limit (60 min: raise hydra.launcher.timeout_min)" in out
    assert "than the launcher books per job (64 GB: raise hydra.launcher.mem_gb)" in out
    assert "GPU-hours of quantization; wall " in out and "with 16 jobs at once" in out


def test_rejected_launch_errors_are_one_line():
    p = plan_sweep("gptq_llama7b", "model=no_such_model")
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr
    p = plan_sweep("gptq_llama7b", "--slots", "0")
    assert p.returncode == 2 and "--slots" in p.stderr
    p = subprocess.run([sys.executable, "-m", "qrecipe", "plan", "llama2_7b", "--sweep", "x"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--sweep comes first" in p.stderr
