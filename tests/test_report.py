"""Sweep summaries rebuilt from run directories; incomplete runs are flagged, not dropped."""
from __future__ import annotations

import csv

from qrecipe.record import outputs
from qrecipe.report.runs import find_runs
from qrecipe.report.runs import main as report_main


def fake_run(d, bits, ppl, complete=True, error=None):
    (d / ".hydra").mkdir(parents=True)
    (d / "recipe.lock.yaml").write_text(
        f"recipe_name: r\nmethod: {{name: gptq, backend: gptqmodel}}\n"
        f"bits: {{width: {bits}, group_size: 64}}\n")
    if error:
        outputs.write_json(d / outputs.ERROR, {"status": "user_error", "error": error})
        return
    outputs.write_json(d / "metrics.json", {
        "recipe": "r", "method": "gptq", "backend": "gptqmodel", "bits": bits,
        "group_size": 64, "size": {"model_dir_bytes": bits * 2**20,
                                   "footprint_bytes": bits * 2**21},
        "eval": {"fp": {"ppl": 30.0}, "quantized": {"ppl": ppl}, "delta_ppl": ppl - 30},
        "time_s": {"quantize": 10.0, "evaluate": 5.0}, "peak_rss_bytes": {"quantize": 2**30}})
    if complete:
        outputs.write_manifest(d)


def test_report_rebuilds_table_and_flags_incomplete(tmp_path, capsys):
    root = tmp_path / "sweep"
    fake_run(root / "0_bits=w2", 2, 900.0)
    fake_run(root / "1_bits=w4", 4, 33.0)
    fake_run(root / "2_bits=w8", 8, 30.1, complete=False)
    fake_run(root / "3_bits=w3", 3, 0, error="bits.width=3: not supported")
    assert len(find_runs([root])) == 4
    assert report_main([str(root)]) == 0
    rows = list(csv.DictReader(open(root / "summary.csv")))
    by_run = {r["run"]: r for r in rows}
    assert by_run["1_bits=w4"]["status"] == "complete"
    assert float(by_run["1_bits=w4"]["delta_ppl"]) == 3.0
    assert by_run["2_bits=w8"]["status"] == "incomplete"
    assert by_run["3_bits=w3"]["status"] == "user_error"
    assert "not supported" in by_run["3_bits=w3"]["error"]
    md = (root / "summary.md").read_text()
    assert "Runs that did not complete" in md and "2_bits=w8" in md
    for png in ("ppl_vs_bits.png", "memory.png", "pareto.png"):
        assert (root / png).stat().st_size > 10_000
    err = capsys.readouterr().err
    assert "skipped 2_bits=w8: incomplete" in err


def test_manifest_detects_tampering(tmp_path):
    fake_run(tmp_path / "r", 4, 33.0)
    assert outputs.verify_manifest(tmp_path / "r") == []
    (tmp_path / "r" / "metrics.json").write_text("{}")
    assert outputs.verify_manifest(tmp_path / "r") == ["metrics.json"]


def test_report_cli_rejects_missing_dir(tmp_path):
    assert report_main([str(tmp_path / "nope")]) == 2
