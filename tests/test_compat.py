"""What users already have keeps working after the subpackage layout: output directories whose
recipe.lock.yaml names `qrecipe.rundir.OutputCheck` (tests/fixtures/lock_535b79e/, written by
qrecipe at 535b79e), the `qrecipe-report` console script, `python -m qrecipe.report` and
`python -m qrecipe.plan_report`."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

LEGACY = ROOT / "tests" / "fixtures" / "lock_535b79e"


def test_legacy_lock_passes_the_lock_checks():
    from qrecipe.recipes.lock import check_lock

    cfg = check_lock(LEGACY / "recipe.lock.yaml")
    assert cfg.method.name == "rtn" and cfg.bits.width == 4
    assert "qrecipe.rundir.OutputCheck" in (LEGACY / "recipe.lock.yaml").read_text()


def test_legacy_callback_target_still_imports():
    from hydra.utils import get_class

    from qrecipe.run.rundir import OutputCheck

    assert get_class("qrecipe.rundir.OutputCheck") is OutputCheck


def test_legacy_lock_reruns_as_a_dry_run(tmp_path):
    lock_dir = tmp_path / "received"
    shutil.copytree(LEGACY, lock_dir)
    r = run_cli(["--config-dir", str(lock_dir), "--config-name", "recipe.lock", "dry_run=true",
                 f"hydra.run.dir={tmp_path / 'again'}"], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "valid" in (r.stdout + r.stderr).lower()


@pytest.mark.e2e
def test_legacy_lock_reruns_to_a_complete_run(tmp_path):
    """The frozen config of 535b79e, re-run as its header says (evaluation off to keep it short)."""
    r = run_cli(["--config-dir", str(LEGACY), "--config-name", "recipe.lock", "eval.enabled=false",
                 f"hydra.run.dir={tmp_path / 'again'}"])
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "again"
    assert (out / "manifest.json").is_file() and (out / "model" / "config.json").is_file()
    assert "qrecipe.run.rundir.OutputCheck" in (out / "recipe.lock.yaml").read_text()


@pytest.mark.parametrize("module", ["qrecipe.report", "qrecipe.plan_report"])
def test_module_entry_points_answer_help(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage" in r.stdout.lower()


def test_console_script_targets_exist():
    import tomllib

    from qrecipe.cli import main as cli_main
    from qrecipe.report import main as report_main

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"qrecipe": "qrecipe.cli:main", "qrecipe-report": "qrecipe.report:main"}
    assert callable(report_main) and callable(cli_main)
