"""The README's "When things go wrong" section shows real messages: each case below makes the
real one (in-process) and checks that the README holds it, with its paths written as there."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import ROOT
from test_bad_inputs import TINY_ARGS, cli

README = (ROOT / "README.md").read_text()
SECTION = README[README.index("## When things go wrong"):README.index("## Sweeps")]


def error_line(err: str) -> str:
    return next(ln for ln in err.splitlines() if ln.startswith("error:"))


def test_section_exists():
    assert "qrecipe resume" in SECTION


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
    with pytest.raises(QRecipeError) as e:
        with oom_guard("quantize", cfg):
            raise OutOfMemoryError("CUDA out of memory")
    assert f"error: {e.value}" in SECTION


def test_recipe_name_message(capsys, tmp_path):
    code, err = cli(["recipe_name=../../etc", "dry_run=true", f"hydra.run.dir={tmp_path}/r"],
                    capsys)
    assert code == 2 and error_line(err) in SECTION
