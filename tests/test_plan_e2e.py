"""`qrecipe plan` against real runs on SmolLM2: the runs test_e2e.py already makes (one run
per recipe per session, shared through run_recipe), so this costs no extra quantization."""
from __future__ import annotations

import json

import pytest

from qrecipe.dtypes import cpu_fast_bf16
from test_e2e import run_recipe

pytestmark = pytest.mark.e2e


# smollm2_gptq_w4 loads the model in bfloat16 (docs/benchmarks.md, issue 12): its fp baseline is
# the plan's 16-bit row, except on a CPU without fast bfloat16, where it runs in float32
# (qrecipe/dtypes.py); the other recipes run in fp32.
GPTQ_FP = "fp32" if cpu_fast_bf16() is False else "fp16"


@pytest.mark.parametrize("key,fmt,fp_fmt", [("gptq", "w4", GPTQ_FP), ("nf4", "nf4", "fp32"),
                                            ("int8", "int8", "fp32"), ("rtn", "w4", "fp32")])
def test_plan_predicts_what_the_run_measures(key, fmt, fp_fmt, tmp_path_factory):
    from qrecipe.plan_report import compare

    out, _ = run_recipe(key, tmp_path_factory)
    m = json.loads((out / "metrics.json").read_text())
    c = compare(out, m)
    assert c["format"] == fmt and c["fp_format"] == fp_fmt
    (fp, fp_meas), (q, q_meas), (disk, disk_meas), (peak, peak_meas) = \
        [(p, meas) for _, p, meas in c["pairs"]]
    # In-memory footprint within 10% (fp and the quantized format), disk within 10%,
    # peak memory while quantizing (process RSS on this CPU) within 25%.
    assert fp == pytest.approx(fp_meas, rel=0.10)
    assert q == pytest.approx(q_meas, rel=0.10)
    assert disk == pytest.approx(disk_meas, rel=0.10)
    assert peak == pytest.approx(peak_meas, rel=0.25)
    # The same comparison is a section of the run's report.md.
    report = (out / "report.md").read_text()
    assert "## Plan against measurement" in report and f"| {fmt} footprint |" in report
