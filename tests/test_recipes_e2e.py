"""Shared recipes run for real on SmolLM2 (offline, RTN: the cheap method): one from an outside
folder, one from a pip-installed pack; then `qrecipe reproduce` repeats the folder recipe's run
bit-identically, and `qrecipe verify` names an edited, a missing and an extra artifact."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli
from recipe_pack import PACK, pack_site, team_recipe  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e
FAST = ["eval.max_windows=2", "eval.speed=false"]


def qrecipe(*args, env=None):
    return subprocess.run([sys.executable, "-m", "qrecipe", *map(str, args)], cwd=ROOT,
                          env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    team = tmp_path_factory.mktemp("team")
    (team / "team_rtn.yaml").write_text(team_recipe("team_rtn", "the team's RTN baseline"))
    out = tmp_path_factory.mktemp("runs") / "team_rtn"
    p = run_cli(["+recipe=team_rtn", *FAST, f"hydra.run.dir={out}"],
                env={"QRECIPE_RECIPE_PATH": str(team)})
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_folder_recipe_runs_and_reports_its_expectations(folder_run):
    m = json.loads((folder_run / "metrics.json").read_text())
    assert m["recipe"] == "team_rtn" and m["method"] == "rtn" and m["status"] == "complete"
    exp = {c["metric"]: c for c in m["expectations"]["checks"]}
    assert exp["size_mb"]["status"] == "met"  # 166.8 MB, as docs/benchmarks.md says
    assert exp["ppl"]["status"] == "not comparable"  # 2 eval windows, the promise is for 8
    assert m["expectations"]["status"] == "met"
    assert "## Recipe expectations" in (folder_run / "report.md").read_text()


def test_pack_recipe_runs_offline(pack_site, tmp_path):
    out = tmp_path / "run"
    p = run_cli([f"+recipe={PACK}/pack_rtn", *FAST, "eval.enabled=false",
                 f"hydra.run.dir={out}"],
                env={"PYTHONPATH": os.pathsep.join([str(pack_site), str(ROOT)])})
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["recipe"] == "pack_rtn" and (out / "manifest.json").is_file()
    exp = {c["metric"]: c for c in m["expectations"]["checks"]}
    assert exp["size_mb"]["status"] == "met" and exp["ppl"]["why"] == "the run was not evaluated"


def test_reproduce_is_bit_identical_and_verify_names_edited_files(folder_run, tmp_path):
    again = tmp_path / "again"
    p = qrecipe("reproduce", folder_run, "--out", again)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert "environment: same" in p.stdout
    assert "quantized weights: bit-identical" in p.stdout
    assert "input eval_token_ids_sha256: identical" in p.stdout
    assert p.stdout.strip().splitlines()[-1].startswith("reproduced:")
    fa = json.loads((folder_run / "fingerprints.json").read_text())
    fb = json.loads((again / "fingerprints.json").read_text())
    assert fa["quantized_weights_sha256"] == fb["quantized_weights_sha256"]

    p = qrecipe("verify", again)
    assert p.returncode == 0 and p.stdout.startswith("intact:"), p.stdout + p.stderr
    with open(again / "metrics.json", "a") as f:
        f.write(" ")
    (again / "model" / "tokenizer.json").unlink()
    (again / "notes.txt").write_text("added later")
    p = qrecipe("verify", again)
    assert p.returncode == 2
    assert "changed: metrics.json" in p.stdout and "missing: model/tokenizer.json" in p.stdout
    assert "extra: notes.txt" in p.stdout and "3 file(s) differ" in p.stderr
    # reproducing a tampered directory is refused, naming the files
    p = qrecipe("reproduce", again, "--out", tmp_path / "third")
    assert p.returncode == 2 and "metrics.json" in p.stderr and not (tmp_path / "third").exists()
