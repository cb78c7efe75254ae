"""The dtype a job runs in (qrecipe/run/dtypes.py): bfloat16 becomes float32 on CPUs whose bfloat16
matmul has no fast path, and the run says so (run.log, metrics.json, report.md)."""
from __future__ import annotations

import json

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


@pytest.mark.e2e
@pytest.mark.parametrize("fast", [False, True])
def test_the_run_records_the_dtype_it_used(fast, tiny_model_dir, tmp_path, monkeypatch, caplog):
    from qrecipe.run.runner import run_job
    monkeypatch.setattr(dtypes, "cpu_fast_bf16", lambda: fast)
    cfg = compose(["method=rtn", "model=local", f"model.path={tiny_model_dir}",
                   "model.dtype=bfloat16", "bits.group_size=32", "eval=none"])
    out = tmp_path / "run"
    assert run_job(cfg, out) == "ok"
    m = json.loads((out / "metrics.json").read_text())
    used = "bfloat16" if fast else "float32"
    assert m["dtype"]["model"] == "bfloat16" and m["dtype"]["used"] == used
    assert m["quantize_details"]["requested_dtype"] == used
    config = json.loads((out / "model" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == used
    said = "runs in float32 on this CPU" in caplog.text  # run.log, through Hydra's logging
    assert said is (not fast)
    assert ("runs in float32 on this CPU" in (out / "report.md").read_text()) is (not fast)
