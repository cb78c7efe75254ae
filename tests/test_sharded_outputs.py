"""A model over backends.base.SHARD_BYTES is saved in several weights files plus an index, and
such an output reloads and evaluates like a single file (bitsandbytes NF4 on the tiny random
Llama, CPU, with the limit lowered so its tensors take several files)."""
from __future__ import annotations

import json
import math

import pytest
from conftest import compose

pytestmark = pytest.mark.e2e


def test_a_sharded_nf4_output_reloads_and_evaluates(tiny_model_dir, tmp_path, monkeypatch):
    from qrecipe.backends import bitsandbytes as bnb_backend
    from qrecipe.record.outputs import verify_manifest
    from qrecipe.run.runner import run_job

    monkeypatch.setattr(bnb_backend, "SHARD_BYTES", 256 << 10)
    cfg = compose(["method=bnb", "bits=w4", "model=local", f"model.path={tiny_model_dir}",
                   "eval=wikitext2_local", "eval.max_windows=2", "eval.seq_len=64",
                   "eval.stride=64", "eval.baseline=false", "eval.speed=false"])
    out = tmp_path / "run"
    assert run_job(cfg, out) == "ok"
    model = out / "model"
    shards = sorted(model.glob("model-*.safetensors"))
    index = json.loads((model / "model.safetensors.index.json").read_text())
    assert len(shards) >= 2 and not (model / "model.safetensors").exists()
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    ppl = json.loads((out / "metrics.json").read_text())["eval"]["quantized"]["ppl"]
    assert math.isfinite(ppl) and ppl > 1  # the reload read every shard (a missing one raises)
    assert verify_manifest(out) == []


def test_a_sharded_llmcompressor_awq_output_reloads_and_evaluates(tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    """llm-compressor's save takes SHARD_BYTES for a model whose load converted no weights (a
    Llama): several files, hashed and verified, and the reload evaluates as in the job."""
    from qrecipe.backends.llmcompressor import adapter
    from qrecipe.record.outputs import verify_manifest
    from qrecipe.run.runner import run_job

    monkeypatch.setattr(adapter, "SHARD_BYTES", 64 << 10)
    cfg = compose(["method=awq", "method.backend=llmcompressor", "bits=w4", "bits.group_size=32",
                   "model=local", f"model.path={tiny_model_dir}", "calibration=pydoc",
                   "calibration.num_samples=4", "calibration.seq_len=64",
                   "eval=wikitext2_local", "eval.max_windows=2", "eval.seq_len=64",
                   "eval.stride=64", "eval.baseline=false", "eval.speed=false"])
    out = tmp_path / "run"
    assert run_job(cfg, out) == "ok", (out / "error.json").read_text()[:2000]
    model = out / "model"
    shards = sorted(model.glob("model-*.safetensors"))
    index = json.loads((model / "model.safetensors.index.json").read_text())
    assert len(shards) >= 2 and not (model / "model.safetensors").exists()
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    m = json.loads((out / "metrics.json").read_text())
    assert m["quantize_details"]["max_shard_bytes"] == 64 << 10
    assert math.isfinite(m["eval"]["quantized"]["ppl"]) and m["eval"]["quantized"]["ppl"] > 1
    assert verify_manifest(out) == []


def test_llmcompressor_keeps_one_shard_where_the_load_converted_weights():
    from types import SimpleNamespace

    from qrecipe.backends.base import SHARD_BYTES
    from qrecipe.backends.llmcompressor.adapter import _shard_size
    assert _shard_size(SimpleNamespace(_weight_conversions=[])) == SHARD_BYTES
    assert _shard_size(SimpleNamespace(_weight_conversions=["a fused-experts converter"])) is None
    assert _shard_size(SimpleNamespace()) is None  # not from from_pretrained, or another version
