"""Multirun sweeps end to end on the tiny random Llama: the report lands in the sweep root, a
rejected job is a row, and submitit's local executor gives the same table as the basic launcher."""
from __future__ import annotations

import csv

import pytest
from conftest import run_cli

pytestmark = pytest.mark.e2e

TIMING = {"run", "quantize_s", "total_s", "peak_rss_mb", "peak_gpu_mb", "prefill_tok_s",
          "decode_tok_s", "gpu"}


def sweep(tmp_path, tiny_model_dir, name, *extra, method="rtn"):
    root = tmp_path / name
    args = ["-m", f"method={method}", "model=local", f"model.path={tiny_model_dir}",
            "bits=w2,w8", "bits.group_size=32", "eval.max_windows=2", "eval.seq_len=128",
            "eval.stride=128", "eval.speed=false", f"hydra.sweep.dir={root}", *extra]
    p = run_cli(args)
    return p, root


def rows(root):
    return {r["bits"]: r for r in csv.DictReader(open(root / "summary.csv"))}


def comparable(r):
    return {k: v for k, v in r.items() if k not in TIMING}


def test_basic_and_submitit_sweeps_give_the_same_report(tmp_path, tiny_model_dir):
    p, basic = sweep(tmp_path, tiny_model_dir, "basic")
    assert p.returncode == 0, p.stderr[-3000:]
    b = rows(basic)
    assert set(b) == {"2", "8"} and all(r["status"] == "complete" for r in b.values())
    assert float(b["2"]["ppl"]) > float(b["8"]["ppl"])  # fewer bits, more damage
    for png in ("ppl_vs_bits.png", "memory.png", "pareto.png"):
        assert (basic / png).is_file()
    assert "| rtn | gptqmodel | 8 | 32 |" in (basic / "summary.md").read_text()

    p, sub = sweep(tmp_path, tiny_model_dir, "submitit", "hydra/launcher=local_submitit")
    assert p.returncode == 0, p.stderr[-3000:]
    s = rows(sub)
    assert {k: comparable(v) for k, v in s.items()} == {k: comparable(v) for k, v in b.items()}


def test_local_parallel_launcher_runs_jobs_side_by_side(tmp_path, tiny_model_dir):
    p, root = sweep(tmp_path, tiny_model_dir, "joblib", "hydra/launcher=local_parallel",
                    "hydra.launcher.n_jobs=2")
    assert p.returncode == 0, p.stderr[-3000:]
    r = rows(root)
    assert set(r) == {"2", "8"} and all(v["status"] == "complete" for v in r.values())


def test_sweep_keeps_going_past_a_rejected_job(tmp_path, tiny_model_dir):
    p, root = sweep(tmp_path, tiny_model_dir, "mixed", method="bnb")
    # bnb has no 2-bit: that job is a row with its error; w8 completes.
    assert p.returncode == 2
    r = rows(root)
    assert r["2"]["status"] == "user_error" and "bits.width=2" in r["2"]["error"]
    assert r["8"]["status"] == "complete"
    assert "Runs that did not complete" in (root / "summary.md").read_text()
