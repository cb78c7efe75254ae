"""llm-compressor's AWQ on float16 models (issue 9's GPU benchmark).

llm-compressor 0.14.0.1 sums AWQ's scale-search loss per calibration batch in the outputs' dtype;
in float16 that sum overflows to inf once a batch's summed squared error passes 65504, and the
grid search raises "No finite loss was found" (see _fp32_awq_loss in the adapter). The tiny model
below reproduces it in ~10 s on CPU: with weights of std 0.5 (the GPU benchmark's 7B shape gets
there with std 0.02 through its width), one batch of 8 x 64 tokens already scores inf at the
first mapping (input_layernorm -> q/k/v) while the layer outputs stay finite (a non-finite
output would make llm-compressor skip the mapping, not raise)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import compose, make_random_llama


def test_fp16_loss_overflows_in_the_library_and_is_finite_under_the_patch():
    from llmcompressor.modifiers.transform.awq import AWQModifier

    from qrecipe.backends.llmcompressor.adapter import _fp32_awq_loss

    torch.manual_seed(0)
    ref = torch.randn(1, 64, 1024).half()
    out = (ref + torch.randn_like(ref)).half()  # 65536 elements, squared error ~1 each
    expected = ((ref.float() - out.float()) ** 2).mean().item()
    awq = AWQModifier()
    # If this starts to pass finite, llm-compressor fixed it: the patch can go.
    assert awq._compute_loss([ref], [out]) == math.inf
    with _fp32_awq_loss(True) as patched:
        assert patched
        assert awq._compute_loss([ref], [out]) == pytest.approx(expected, rel=1e-6)
    assert awq._compute_loss([ref], [out]) == math.inf  # restored
    with _fp32_awq_loss(False) as patched:  # bf16 / fp32: the library's code runs untouched
        assert not patched
        assert awq._compute_loss([ref], [out]) == math.inf


def test_awq_llmcompressor_runs_on_a_float16_model_whose_loss_sum_overflows(tmp_path):
    from safetensors.torch import load_file

    from qrecipe.run.runner import run_job

    model_dir = make_random_llama(tmp_path / "m", 64, 128, torch.float16, init_std=0.5)
    cfg = compose(["method=awq", "method.backend=llmcompressor", "model=local",
                   f"model.path={model_dir}", "bits=w4", "bits.group_size=32",
                   "calibration=pydoc", "calibration.num_samples=8", "calibration.seq_len=64",
                   "hardware=cpu", "hardware.dtype=float16", "hardware.calib_batch_size=8",
                   "eval.enabled=false"])
    out = tmp_path / "run"
    # Without the patch: Exception "No finite loss was found in best scales grid search".
    assert run_job(cfg, out) == "ok", (out / "error.json").read_text()[:2000]
    d = json.loads((out / "metrics.json").read_text())["quantize_details"]
    assert d["dtype"] == "float16" and d["fp32_loss_patch"] is True
    tensors = load_file(str(out / "model" / "model.safetensors"))
    assert all(t.isfinite().all() for t in tensors.values() if t.is_floating_point())
