"""The messages the docs quote are real: each case below makes the real one (in-process) and
checks that docs/reliability.md (docs/plan.md for the planner's) holds it, with its paths written
as there; README's "When things go wrong" quotes only lines that page holds."""
from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from conftest import ROOT
from test_bad_inputs import TINY_ARGS, cli

README = (ROOT / "README.md").read_text()
README_SECTION = README[README.index("## When things go wrong"):README.index("## Sweeps")]
SECTION = (ROOT / "docs" / "reliability.md").read_text()
PLAN_PAGE = (ROOT / "docs" / "plan.md").read_text()


def error_line(err: str) -> str:
    return next(ln for ln in err.splitlines() if ln.startswith("error:"))


def test_section_exists():
    assert "qrecipe resume" in SECTION and "qrecipe resume" in README_SECTION
    assert "docs/reliability.md" in README_SECTION


def test_readme_quotes_only_messages_the_docs_hold():
    """README's examples are a subset of the page whose every message is made below."""
    fenced = re.findall(r"^```text\n(.*?)^```", README_SECTION, flags=re.MULTILINE | re.DOTALL)
    quoted = [ln for body in fenced for ln in body.splitlines() if ln.strip()]
    assert len(quoted) >= 3
    for line in quoted:
        assert line in SECTION, line


def test_interrupted_message():
    from qrecipe.run.interrupt import Interrupted, message
    line = message(Interrupted(signal.SIGTERM), "/data/runs/a", "quantize")
    assert line in SECTION


def test_refused_complete_run(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "a"
    out.mkdir()
    (out / "recipe.lock.yaml").write_text("recipe_name: other\n")
    (out / "manifest.json").write_text('{"complete": true, "files": {}}')
    code, err = cli([*TINY_ARGS, f"model.path={tiny_model_dir}", f"hydra.run.dir={out}"], capsys)
    assert code == 2
    assert error_line(err).replace(str(out), "/data/runs/a") in SECTION


def test_lock_and_read_only_messages(tmp_path, monkeypatch):
    from qrecipe.errors import QRecipeError
    from qrecipe.run.rundir import Claim, check_writable
    out = tmp_path / "a"
    held = Claim(out)
    try:
        with pytest.raises(QRecipeError) as e:
            Claim(out)
    finally:
        held.release()
    line = f"error: {e.value}".replace(str(out), "/data/runs/a").replace(str(os.getpid()), "4242")
    assert line in SECTION
    ro = tmp_path / "runs"
    ro.mkdir()
    real = os.access  # as root, chmod cannot make a directory read-only: say it is
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if Path(p) == ro
                        else real(p, m, *a, **k))
    with pytest.raises(QRecipeError) as e:
        check_writable(ro / "a")
    assert f"error: {e.value}".replace(str(ro), "/data/runs") in SECTION


def test_pickle_and_gguf_messages(tmp_path, capsys):
    m = tmp_path / "llama-bin"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({"hidden_size": 64, "intermediate_size": 128}))
    (m / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    code, err = cli(["model=local", f"model.path={m}", "dry_run=true",
                     f"hydra.run.dir={tmp_path}/r"], capsys)
    assert code == 2 and error_line(err).replace(str(m), "/models/llama-bin") in SECTION
    g = tmp_path / "x.gguf"
    g.write_text("this is not a GGUF file\n")
    code, err = cli(["model.source=gguf", f"model.path={g}", "dry_run=true",
                     f"hydra.run.dir={tmp_path}/r"], capsys)
    assert code == 2 and error_line(err).replace(str(g), "/models/x.gguf") in SECTION


def test_out_of_memory_message():
    from omegaconf import OmegaConf

    from qrecipe.errors import QRecipeError
    from qrecipe.run.resources import oom_guard

    class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name, without CUDA
        pass
    cfg = OmegaConf.create({"calibration": {"num_samples": 128, "seq_len": 512},
                            "hardware": {"device": "cuda"}})
    with pytest.raises(QRecipeError) as e, oom_guard("quantize", cfg):
        raise OutOfMemoryError("CUDA out of memory")
    assert f"error: {e.value}" in SECTION


def test_recipe_name_message(capsys, tmp_path):
    code, err = cli(["recipe_name=../../etc", "dry_run=true", f"hydra.run.dir={tmp_path}/r"],
                    capsys)
    assert code == 2 and error_line(err) in SECTION


def test_planner_message_for_an_unknown_layout(tmp_path, capsys):
    from qrecipe.commands import run_command
    conf = json.loads((ROOT / "tests" / "fixtures" / "llama2_7b" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**conf, "model_type": "mixtral"}))
    assert run_command(["plan", str(tmp_path)]) == 2
    assert error_line(capsys.readouterr().err) in PLAN_PAGE


def _threat_model_lines():
    part = README[README.index("### Threat model"):README.index("## When things go wrong")]
    body = re.findall(r"^```text\n(.*?)^```", part, flags=re.MULTILINE | re.DOTALL)[0]
    return [ln for ln in body.splitlines() if ln.strip()]


def test_threat_model_quotes_three_real_refusals(tmp_path):
    """README's three refusals, made for real (subprocesses) at paths written as /tmp/tm."""
    import shutil

    from conftest import run_cli

    (tmp_path / "trojan").mkdir()
    (tmp_path / "trojan" / "config.json").write_text(json.dumps(
        {"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}))
    (tmp_path / "trojan" / "modeling_x.py").write_text(f"open({str(tmp_path / 'PWNED')!r}, 'w')\n")
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "forced.yaml").write_text(
        "# @package _global_\nrecipe_name: forced\nforce: true\n")
    run = tmp_path / "received" / "run"
    run.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "fixtures" / "lock_535b79e" / "recipe.lock.yaml", run)
    (tmp_path / "sentinel").write_text("keep")
    (run / "run.log").symlink_to(tmp_path / "sentinel")
    made = [run_cli(["model=local", f"model.path={tmp_path / 'trojan'}", "dry_run=true"]),
            run_cli(["+recipe=forced", "dry_run=true"],
                    env={"QRECIPE_RECIPE_PATH": str(tmp_path / "team")}),
            run_cli(["resume", str(run)])]
    got = [error_line(r.stderr).replace(str(tmp_path), "/tmp/tm") for r in made]
    assert [r.returncode for r in made] == [2, 2, 2]
    assert got == _threat_model_lines()
    assert not (tmp_path / "PWNED").exists() and (tmp_path / "sentinel").read_text() == "keep"
