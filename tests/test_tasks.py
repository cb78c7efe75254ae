"""Task accuracy through lm-evaluation-harness: the shipped local task, the settings that key the
fp cache, retention, the sweep columns and plot, the report section, the papers' protocol flag."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli
from omegaconf import OmegaConf

from qrecipe.errors import QRecipeError
from qrecipe.evaluation import tasks

TASK_DIR = ROOT / "qrecipe" / "evaluation" / "lm_tasks"


def eval_cfg(**kw):
    return OmegaConf.create({"tasks": ["qrecipe_mc"], "limit": None, "num_fewshot": None,
                             "task_batch_size": 4, "baseline": True, **kw})


def test_local_task_file_is_what_its_script_writes(tmp_path):
    before = (TASK_DIR / "qrecipe_mc.jsonl").read_bytes()
    p = subprocess.run([sys.executable, str(TASK_DIR / "make_qrecipe_mc.py")], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (TASK_DIR / "qrecipe_mc.jsonl").read_bytes() == before
    rows = [json.loads(x) for x in before.decode().splitlines()]
    assert len(rows) >= 300
    for r in rows:
        assert len(set(r["choices"])) == 4 and 0 <= r["answer"] < 4


def test_local_task_config_points_at_the_shipped_jsonl(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # lm-eval would read a relative data file from the cwd
    cfg = tasks._local_task("qrecipe_mc")
    path = cfg["dataset_kwargs"]["data_files"]["test"]
    assert path.startswith("/") and path.endswith("qrecipe_mc.jsonl")
    assert cfg["output_type"] == "multiple_choice"


def test_settings_key_changes_with_the_task_files_and_options():
    a = tasks.settings(eval_cfg(), 0)
    assert a["lm_eval_version"] and a["local_task_files_sha256"]["qrecipe_mc"]
    assert tasks.settings(eval_cfg(limit=8), 0) != a
    assert tasks.settings(eval_cfg(num_fewshot=2), 0) != a
    assert tasks.settings(eval_cfg(), 1) != a


def test_check_rejects_bad_values():
    with pytest.raises(QRecipeError, match="eval.limit"):
        tasks.check(eval_cfg(limit=0))
    with pytest.raises(QRecipeError, match="eval.tasks"):
        tasks.check(eval_cfg(tasks=["some/path.yaml"]))
    tasks.check(eval_cfg(tasks=[]))  # nothing asked: nothing checked


def test_retention_and_summary_columns():
    fp = {"t": {"acc": 0.5, "acc_norm": 0.4}}
    q = {"t": {"acc": 0.45, "acc_stderr": 0.02, "acc_norm": 0.4}}
    ret = tasks.retention(fp, q)
    assert ret["t"]["acc"] == pytest.approx(0.9) and ret["t"]["acc_norm"] == pytest.approx(1.0)
    cols = tasks.summary_columns({"eval": {"tasks": {"fp": fp, "quantized": q,
                                                     "retention": ret}}})
    assert cols == {"acc:t": 0.45, "acc_stderr:t": 0.02, "fp_acc:t": 0.5, "retention:t": 0.9,
                    "acc_retention": 0.9}
    assert tasks.summary_columns({"eval": {}}) == {"acc_retention": None}
    lines = "\n".join(tasks.report_lines({"settings": tasks.settings(eval_cfg(), 0),
                                          "fp": fp, "quantized": q, "retention": ret}))
    assert "| t | acc | 0.5000 | 0.4500 | 0.0200 | 90.0% |" in lines


def test_paper_protocol_is_flagged_only_when_exact():
    from qrecipe.evaluation.perplexity import protocol
    paper = OmegaConf.create({"seq_len": 2048, "stride": 2048, "max_windows": None})
    p = protocol(paper, "file:pkg://qrecipe/texts/wikitext2_raw_test.txt", "x", 300_000)
    assert "papers' WikiText-2 protocol" in p["paper_protocol"] and p["windows"] == 146
    short = OmegaConf.create({"seq_len": 512, "stride": 512, "max_windows": 8})
    assert protocol(short, "file:pkg://qrecipe/texts/wikitext2_raw_test.txt", "x",
                    300_000)["paper_protocol"] is None
    assert protocol(paper, "file:other.txt", "x", 300_000)["paper_protocol"] is None


def test_paper_protocol_eval_option_composes():
    from conftest import compose
    cfg = compose(["eval=wikitext2_paper_local"])
    assert (cfg.eval.seq_len, cfg.eval.stride, cfg.eval.max_windows) == (2048, 2048, None)


def test_score_on_tiny_model_gives_accuracy_and_stderr(tiny_model_dir):
    from qrecipe.inputs import models
    model = models.load_causal_lm(tiny_model_dir, "float32")
    tok = models.load_tokenizer(tiny_model_dir)
    s = tasks.settings(eval_cfg(limit=8), 0)
    r = tasks.score(model, tok, s, "tiny")["qrecipe_mc"]
    assert 0.0 <= r["acc"] <= 1.0 and r["acc_stderr"] >= 0 and r["samples"] == 8
    assert tasks.score(model, tok, s, "tiny")["qrecipe_mc"] == r  # deterministic


@pytest.mark.e2e
def test_method_sweep_reports_accuracy_retention_and_plot(tmp_path, tiny_model_dir):
    """Acceptance 2 (tiny model, 16 items): method=gptq,awq,rtn,bnb with the local lm-eval task."""
    root = tmp_path / "sweep"
    p = run_cli(["-m", "method=gptq,awq,rtn,bnb", "model=local", f"model.path={tiny_model_dir}",
                 "bits=w4", "bits.group_size=64", "calibration=pydoc",
                 "calibration.num_samples=4", "calibration.seq_len=64", "eval.max_windows=2",
                 "eval.seq_len=128", "eval.stride=128", "eval.speed=false",
                 "eval.tasks=[qrecipe_mc]", "eval.limit=16", f"hydra.sweep.dir={root}"])
    assert p.returncode == 0, p.stderr[-4000:]
    rows = {r["method"]: r for r in csv.DictReader(open(root / "summary.csv"))}
    assert set(rows) == {"gptq", "awq", "rtn", "bnb"}
    for r in rows.values():
        assert r["status"] == "complete"
        assert 0 <= float(r["acc:qrecipe_mc"]) <= 1 and float(r["acc_stderr:qrecipe_mc"]) > 0
        assert float(r["retention:qrecipe_mc"]) == pytest.approx(
            float(r["acc:qrecipe_mc"]) / float(r["fp_acc:qrecipe_mc"]), abs=1e-3)
    assert "retention:qrecipe_mc" in (root / "summary.md").read_text()
    assert (root / "accuracy.png").stat().st_size > 10_000
    run = root / next(r["run"] for r in rows.values() if r["method"] == "gptq")
    m = json.loads((run / "metrics.json").read_text())["eval"]["tasks"]
    assert m["settings"]["limit"] == 16 and set(m) >= {"fp", "quantized", "retention"}
    assert "Task accuracy (lm-evaluation-harness)" in (run / "report.md").read_text()


@pytest.mark.e2e
@pytest.mark.slow
def test_full_local_task_on_smollm2_method_sweep(tmp_path):
    """Acceptance 2 at full size: the shipped recipes' methods on SmolLM2 with all 304 items."""
    root = tmp_path / "sweep"
    p = run_cli(["-m", "+recipe=smollm2_gptq_w4", "method=gptq,awq,rtn,bnb",
                 "calibration.num_samples=8", "eval.speed=false", "eval.tasks=[qrecipe_mc]",
                 f"hydra.sweep.dir={root}"], timeout=5400)
    assert p.returncode == 0, p.stderr[-4000:]
    rows = {r["method"]: r for r in csv.DictReader(open(root / "summary.csv"))}
    assert set(rows) == {"gptq", "awq", "rtn", "bnb"}
    for r in rows.values():
        fp = float(r["fp_acc:qrecipe_mc"])
        assert fp > 0.5  # SmolLM2 knows most of these; chance is 0.25
        assert 0.25 < float(r["acc:qrecipe_mc"]) and 0 < float(r["acc_stderr:qrecipe_mc"]) < 0.05
        assert 0.5 < float(r["retention:qrecipe_mc"]) < 1.2
    assert (root / "accuracy.png").stat().st_size > 10_000
