"""The dtype a job runs in (qrecipe/run/dtypes.py): bfloat16 becomes float32 on CPUs whose bfloat16
matmul has no fast path, and the run says so (run.log, metrics.json, report.md)."""
from __future__ import annotations

import json
import logging

import pytest
from conftest import compose
from omegaconf import OmegaConf

from qrecipe.run import dtypes

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n"
AVX512 = "flags\t\t: fpu avx2 avx512f avx512dq avx512bw avx512vl\n"
AMX = "flags\t\t: fpu avx2 amx_bf16 amx_tile\n"
ARM_BF16 = "Features\t: fp asimd sve bf16 i8mm\n"
ARM = "Features\t: fp asimd crc32\n"


@pytest.mark.parametrize("text,fast", [(AVX2, False), (AVX512, True), (AMX, True),
                                       (ARM_BF16, True), (ARM, False), ("model name: x\n", None)])
def test_which_cpus_have_fast_bfloat16(text, fast, tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(text)
    assert dtypes.cpu_fast_bf16(str(f)) is fast
    assert dtypes.cpu_fast_bf16(str(tmp_path / "missing")) is None


def _cfg(model_dtype="bfloat16", device="cpu", hw_dtype=None):
    return OmegaConf.create({"model": {"dtype": model_dtype},
                             "hardware": {"device": device, "dtype": hw_dtype}})


def test_bfloat16_runs_in_float32_only_where_the_cpu_has_no_fast_path(monkeypatch):
    dtype, why = dtypes.run_dtype(_cfg(), fast_bf16=False)
    assert dtype == "float32" and "hardware.dtype=bfloat16" in why
    assert dtypes.run_dtype(_cfg(), fast_bf16=True) == ("bfloat16", None)
    monkeypatch.setattr(dtypes, "cpu_fast_bf16", lambda: None)  # not Linux: unchanged
    assert dtypes.run_dtype(_cfg()) == ("bfloat16", None)
    # an explicit hardware dtype is kept on any CPU; a GPU and other dtypes are untouched
    assert dtypes.run_dtype(_cfg(hw_dtype="bfloat16"), fast_bf16=False) == ("bfloat16", None)
    assert dtypes.run_dtype(_cfg(device="cuda"), fast_bf16=False) == ("bfloat16", None)
    assert dtypes.run_dtype(_cfg("float32"), fast_bf16=False) == ("float32", None)
    assert dtypes.run_dtype(_cfg("float16", "cuda", "float16"), False) == ("float16", None)


def test_cpuinfo_file_from_the_environment(tmp_path, monkeypatch):
    """QRECIPE_CPUINFO: a test (or the float32 proof on an AVX-512 machine) reads another CPU."""
    f = tmp_path / "cpuinfo"
    f.write_text(AVX2)
    monkeypatch.setenv("QRECIPE_CPUINFO", str(f))
    assert dtypes.cpu_fast_bf16() is False
    assert dtypes.run_dtype(_cfg())[0] == "float32"
    assert dtypes.saved_dtype(_cfg()) == "bfloat16"
    assert dtypes.saved_dtype(_cfg(hw_dtype="float16")) == "float16"


def _header(path):
    from qrecipe.record.canonical import read_header
    with open(path, "rb") as f:
        return read_header(f)[1]


def _checkpoint(d, tensors, config_dtype="float32"):
    from safetensors.torch import save_file
    d.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps({"dtype": config_dtype, "hidden_size": 8}))
    return d


def test_recast_touches_only_unquantized_floats(tmp_path):
    """GPTQ's packed layers, bitsandbytes' state and anything not float stay as written; the
    embeddings, norms and an unquantized lm_head take the recipe's dtype, in safetensors' own
    layout (the bytes save_file gives)."""
    import torch
    from safetensors.torch import load_file, save_file

    from qrecipe.record.recast import recast
    torch.manual_seed(0)
    t = {"model.embed_tokens.weight": torch.randn(16, 8), "model.norm.weight": torch.randn(8),
         "lm_head.weight": torch.randn(16, 8),
         "model.layers.0.q.qweight": torch.randint(0, 99, (1, 8), dtype=torch.int32),
         "model.layers.0.q.qzeros": torch.randint(0, 99, (1, 1), dtype=torch.int32),
         "model.layers.0.q.scales": torch.randn(1, 8).half(),
         "model.layers.0.q.bias": torch.randn(8),  # a quantized layer's: stays float32
         "model.layers.0.o.weight": torch.randint(0, 9, (4, 1), dtype=torch.uint8),
         "model.layers.0.o.weight.absmax": torch.randn(2),
         "model.layers.0.o.weight.quant_state.bitsandbytes__nf4":
             torch.randint(0, 9, (5,), dtype=torch.uint8)}
    d = _checkpoint(tmp_path / "run" / "model", t)
    assert recast(d, "bfloat16", root=tmp_path / "run") == 3
    h = _header(d / "model.safetensors")
    cast = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    assert {k for k, v in h.items() if v.get("dtype") == "BF16"} == cast
    assert h["model.layers.0.q.bias"]["dtype"] == "F32"
    assert h["model.layers.0.o.weight.absmax"]["dtype"] == "F32"
    want = {k: (v.to(torch.bfloat16) if k in cast else v) for k, v in t.items()}
    got = load_file(str(d / "model.safetensors"))
    assert all(torch.equal(got[k], want[k]) for k in t)
    save_file(want, str(tmp_path / "ref.safetensors"), metadata={"format": "pt"})
    assert (d / "model.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert json.loads((d / "config.json").read_text())["dtype"] == "bfloat16"
    assert recast(d, "bfloat16", root=tmp_path / "run") == 0  # done once: nothing left


def test_recast_updates_the_shard_index(tmp_path):
    import torch

    from qrecipe.record.recast import recast
    d = _checkpoint(tmp_path / "run" / "model", {"a.weight": torch.ones(4, 4)})
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 64}, "weight_map": {"a.weight": "model.safetensors"}}))
    recast(d, "float16", root=tmp_path / "run")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 32 and index["weight_map"]["a.weight"]


def test_recast_never_writes_through_a_link(tmp_path):
    import torch

    from qrecipe.errors import QRecipeError
    from qrecipe.record.recast import recast
    elsewhere = _checkpoint(tmp_path / "elsewhere", {"a.weight": torch.ones(2)})
    run = tmp_path / "run"
    run.mkdir()
    (run / "model").symlink_to(elsewhere)
    before = (elsewhere / "model.safetensors").read_bytes()
    with pytest.raises(QRecipeError, match="symbolic link"):
        recast(run / "model", "bfloat16", root=run)
    assert (elsewhere / "model.safetensors").read_bytes() == before


@pytest.mark.e2e
def test_a_float32_job_saves_the_bfloat16_checkpoint(tiny_model_dir, tmp_path, monkeypatch,
                                                     caplog):
    """The same recipe, computed in float32 (a CPU without fast bfloat16) and in bfloat16:
    checkpoints of the same dtypes, layout and size; the reason said once in run.log and
    report.md, recorded in metrics.json."""
    from qrecipe.run.runner import run_job
    caplog.set_level(logging.INFO, logger="qrecipe")
    runs = {}
    for fast in (False, True):
        monkeypatch.setattr(dtypes, "cpu_fast_bf16", lambda fast=fast: fast)
        cfg = compose(["method=rtn", "model=local", f"model.path={tiny_model_dir}",
                       "model.dtype=bfloat16", "bits.group_size=32", "eval=none"])
        out = runs[fast] = tmp_path / f"fast_{fast}"
        caplog.clear()
        assert run_job(cfg, out) == "ok"
        m = json.loads((out / "metrics.json").read_text())
        used = "bfloat16" if fast else "float32"
        assert m["dtype"]["used"] == used and m["dtype"]["saved"] == "bfloat16"
        assert m["quantize_details"]["requested_dtype"] == used
        assert ("recast_s" in m["overhead"]) is (not fast)  # timed: qrecipe's own work
        config = json.loads((out / "model" / "config.json").read_text())
        assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
        said = "computes in float32 on this CPU"
        assert caplog.text.count(said) == (0 if fast else 1)  # run.log, once
        assert (out / "report.md").read_text().count(said) == (0 if fast else 1)
    slow, fast = (_header(runs[f] / "model" / "model.safetensors") for f in (False, True))
    assert {k: (v["dtype"], v["shape"]) for k, v in slow.items() if k != "__metadata__"} == \
        {k: (v["dtype"], v["shape"]) for k, v in fast.items() if k != "__metadata__"}
    assert (runs[False] / "model" / "model.safetensors").stat().st_size == \
        (runs[True] / "model" / "model.safetensors").stat().st_size
