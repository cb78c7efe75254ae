"""`qrecipe resume DIR` tells the same story as a fresh run (qrecipe/commands/resume.py applies
the job logging Hydra applies, conf/hydra/job_logging/qrecipe.yaml): qrecipe's own timestamped
lines on the terminal, the libraries' output in library.log, run.log without it, and the final
block last. The run resumed is the cheapest one that has every stage to do: a directory holding
only its frozen config (a run killed right after it started)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT, compose

from qrecipe.recipes import frozen
from qrecipe.record.outputs import LIBRARY_LOG, run_state

pytestmark = pytest.mark.e2e


def test_a_resumed_run_tells_the_story_of_a_fresh_one(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    frozen.write_lock(out, compose([
        "model=local", f"model.path={tiny_model_dir}", "method=rtn", "bits.group_size=32",
        "calibration.num_samples=4", "calibration.seq_len=32", "eval.seq_len=64",
        "eval.stride=64", "eval.max_windows=2", "eval.speed=false"]))
    assert run_state(out).incomplete
    r = subprocess.run([sys.executable, "-m", "qrecipe", "resume", str(out)], check=False,
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert run_state(out).complete
    lines = r.stderr.splitlines()
    # every line is qrecipe's (its timestamp), the first says what is resumed
    assert all(re.match(r"\[\d\d:\d\d:\d\d\] ", ln) for ln in lines), lines
    assert f"] resuming the unfinished run in {out} (incomplete" in lines[0]
    assert any(ln.endswith("] == quantize") for ln in lines)
    lib = (out / LIBRARY_LOG).read_text()
    assert "GPT-QModel" in lib and "GPT-QModel" not in r.stderr + r.stdout
    tail = [ln.split("] ", 1)[1] for ln in lines[-5:]]
    assert tail[0] == "result: no expectations"
    assert re.fullmatch(r"  perplexity \d+\.\d{4}, fp \d+\.\d{4}, Δppl [+-]\d+\.\d{4}", tail[1])
    assert tail[2].startswith("  size on disk ")
    assert re.fullmatch(r"  total time \d+m \d\ds", tail[3])
    assert tail[4] == f"  report: {out / 'report.md'}"
    run_log = (out / "run.log").read_text()
    assert "GPT-QModel" not in run_log and "[qrecipe" in run_log
    assert "\r" not in run_log  # the file formatter: no progress frames
