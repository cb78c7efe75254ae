"""Mistakes a user can make end in one clear line naming key, value and what is allowed, exit
code 2, no traceback, and no output directory that looks complete."""
from __future__ import annotations

import pytest
from conftest import JARGON, run_cli

CASES = {
    "unknown key": (["method.dampp=0.1"], "dampp"),
    "wrong type": (["bits.width=four"], "bits.width"),
    "unknown recipe": (["+recipe=nope"], "smollm2_gptq_w4"),  # lists what exists
    "unsupported bits": (["+recipe=smollm2_awq_w4", "method.backend=gptqmodel", "bits=w2"],
                         "bits.width=2"),
    "bnb 3-bit": (["+recipe=smollm2_nf4", "bits=w3"], "bits.width=3"),
    "group size does not divide": (["+recipe=smollm2_gptq_w4", "bits.group_size=128"],
                                   "hidden_size (576)"),
    "unsupported group size": (["+recipe=smollm2_gptq_w4", "bits.group_size=48"],
                               "bits.group_size=48"),
    "missing calibration file": (["+recipe=smollm2_gptq_w4", "calibration.path=/nope.txt"],
                                 "calibration.path='/nope.txt'"),
    "missing model file": (["model.path=/nope.gguf"], "model.path='/nope.gguf'"),
    "unknown backend": (["method.backend=autogptq"], "allowed: bitsandbytes, gptqmodel"),
    "backend without method": (["method=bnb", "method.backend=gptqmodel", "bits=w4"],
                               "method.backend='gptqmodel'"),
    "unknown calibration source": (["calibration.source=s3"], "calibration.source='s3'"),
    "missing eval file": (["eval.path=/nope.txt"], "eval.path='/nope.txt'"),
    "unknown model source": (["model.source=ftp"], "model.source='ftp'"),
    "cuda on a CPU machine": (["hardware=gpu_24gb"], "hardware.device='cuda'"),
    "zero samples": (["calibration.num_samples=0"], "calibration.num_samples=0"),
    "a config group set to null": (["hardware=null"], "hardware=null: a config group takes one "
                                                      "of its options; allowed: a100_40gb"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_user_error_is_one_clear_line(name, tmp_path):
    args, expect = CASES[name]
    p = run_cli([*args, f"hydra.run.dir={tmp_path}/run"])
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert expect in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "run" / "manifest.json").exists()


def _file_case(tmp_path, content: str, suffix=".txt"):
    f = tmp_path / f"calib{suffix}"
    f.write_text(content)
    return run_cli(["+recipe=smollm2_gptq_w4", "calibration.source=local",
                    f"calibration.path={f}", "eval.enabled=false",
                    f"hydra.run.dir={tmp_path}/run"])


def test_empty_calibration_file(tmp_path):
    p = _file_case(tmp_path, "")
    assert p.returncode == 2 and "file is empty" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()  # a rejected single run leaves nothing behind


def test_too_short_calibration_text(tmp_path):
    p = _file_case(tmp_path, "Far too short to calibrate on.")
    assert p.returncode == 2 and "calibration text too short" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_jsonl_without_the_text_field(tmp_path):
    p = _file_case(tmp_path, '{"body": "x"}\n', suffix=".jsonl")
    assert p.returncode == 2 and "calibration.text_field='text'" in p.stderr
    assert "allowed: body" in p.stderr


def test_missing_backend_package_gives_install_hint(monkeypatch):
    import importlib.util

    from qrecipe.backends import BACKENDS
    from qrecipe.errors import QRecipeError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gptqmodel" else real(name, *a))
    with pytest.raises(QRecipeError) as e:
        BACKENDS.get("gptqmodel")().check_installed()
    assert "pip install -c constraints.txt gptqmodel==7.6.0" in str(e.value)
    assert "method.backend='gptqmodel'" in str(e.value)


def test_hub_model_offline_is_a_clear_error(tmp_path):
    p = run_cli(["+recipe=gptq_llama7b", "hardware=cpu", f"hydra.run.dir={tmp_path}/run"],
                env={"HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2, p.stderr[-2000:]
    # refused up front (qrecipe/inputs/offline.py), before the hub calibration and eval text
    assert ("model.path='meta-llama/Llama-2-7b-hf': HF_HUB_OFFLINE is set and this hub model is "
            "not in the local Hugging Face cache") in p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("error:") == 1
