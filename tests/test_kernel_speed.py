"""The floor of a decode step (kernel_speed.py and gpu_bench.py's speed step): the fp16 model
without its decoder layers' GEMMs (gpu_bench_jobs.strip_gemms) and the split of each row's step
into that floor and its GEMMs (gpu_bench_table.decode_floor). The timing itself runs on a GPU
(docs/benchmarks.md)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

torch = pytest.importorskip("torch")

import gpu_bench_jobs as jobs  # noqa: E402
import gpu_bench_table as table  # noqa: E402
import kernel_speed as ks  # noqa: E402


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval()


def test_a_stripped_layer_adds_nothing_and_holds_no_projection():
    model = jobs.strip_gemms(_llama())
    assert not [n for n, m in model.model.layers.named_modules()
                if isinstance(m, torch.nn.Linear)]
    assert isinstance(model.lm_head, torch.nn.Linear)  # the head is part of the floor
    ids = torch.randint(0, 128, (2, 9))
    with torch.no_grad():
        hidden = model.model(ids).last_hidden_state
        # every attention and MLP output is zero: the residual stream stays the embeddings
        want = model.model.norm(model.model.embed_tokens(ids))
        assert torch.equal(hidden, want)
        out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 13)


def test_the_shared_zero_buffer_grows_and_stays_zero():
    model = jobs.strip_gemms(_llama())
    with torch.no_grad():
        for n in (3, 700, 2000):
            model(torch.randint(0, 128, (1, n)))
    free = model.model.layers[0].mlp.down_proj
    x = torch.ones(1, 2000, 128)
    y = free(x)
    assert y.shape == (1, 2000, 64) and not y.any()


def _speed(method, kernel, tok_s, weights):
    return {"method": method, "kernel": kernel, "weights_bytes": weights,
            "b1": {"decode_tokens_per_s": tok_s, "decode_path": "graph"},
            "b8": {"decode_tokens_per_s": 8 * tok_s}}


def test_floor_splits_each_step_and_bounds_a_4bit_decode():
    # fp16: 10 ms a token; without GEMMs 4 ms; fp16's GEMM weights 10 GB of 11, 4-bit's 2.5 GB
    doc = {"speed": [_speed("fp16", "fp16", 100.0, 11e9),
                     _speed("fp16", jobs.NO_GEMM, 250.0, 1e9),
                     _speed("gptq-sym", "marlin", 1000 / 6.5, 3.5e9)]}
    f = table.decode_floor(doc["speed"])
    assert f["fp16_step_ms"] == 10.0 and f["floor_step_ms"] == 4.0 and f["fp16_gemm_ms"] == 6.0
    row = f["rows"]["gptq-sym/marlin"]
    assert row["step_ms"] == 6.5 and row["gemm_ms"] == 2.5
    assert row["gemm_bytes_vs_fp16"] == 0.25
    assert row["ceiling_vs_fp16"] == round(10 / (4 + 1.5), 3)  # 1.818x: under 2.5x
    assert [r["kernel"] for r in ks.table_rows({**doc, "device": "x", "device_cc": 9.0})] == \
        ["marlin"]  # the floor is no row of the kernel table


def test_kernels_keeps_fp16_and_the_named_kernels(tmp_path):
    got = ks.targets({}, tmp_path, 9.0, {ks.NO_GEMM})
    assert [k for _, k, _ in got] == ["fp16", ks.NO_GEMM]


def _row(gpu, kernel, b1, dtype="float16", checkpoint="gptq-asym"):
    return {"gpu": gpu, "dtype": dtype, "checkpoint": checkpoint, "kernel": kernel,
            "b1_vs_fp16": b1}


def _doc(kernels, rows, date="new"):
    return {"device": "H100", "device_cc": 9.0, "dtype": "float16", "date": date,
            "versions": {}, "command": "c", "shape": {}, "kernels": kernels, "table": rows}


def test_a_subset_replaces_only_its_kernels_rows_and_keeps_every_source():
    old = {"sources": [{"device": "H100", "dtype": "float16", "date": "old"},
                       {"device": "A100", "dtype": "float16", "date": "a100"}],
           "rows": [_row("H100", "torch", 0.45), _row("H100", "awq_marlin", 9.9),
                    _row("H100", "torch", 0.5, dtype="bfloat16"), _row("A100", "awq_marlin", 1.2)]}
    new = ks.merged(old, _doc(["awq_marlin"], [_row("H100", "awq_marlin", 1.5)]))
    assert [(r["gpu"], r["kernel"], r["dtype"], r["b1_vs_fp16"]) for r in new["rows"]] == [
        ("H100", "torch", "float16", 0.45), ("H100", "torch", "bfloat16", 0.5),
        ("A100", "awq_marlin", "float16", 1.2), ("H100", "awq_marlin", "float16", 1.5)]
    assert [s["date"] for s in new["sources"]] == ["old", "a100", "new"]
    assert new["sources"][-1]["kernels"] == ["awq_marlin"]
    # the same subset again: its earlier source goes with its rows, the full run's stays
    again = ks.merged(new, _doc(["awq_marlin"], [_row("H100", "awq_marlin", 1.4)], "newer"))
    assert [s["date"] for s in again["sources"]] == ["old", "a100", "newer"]
    assert [r["b1_vs_fp16"] for r in again["rows"] if r["kernel"] == "awq_marlin"] == [1.2, 1.4]


def test_a_full_run_replaces_its_gpu_and_dtype_rows_and_source():
    old = {"sources": [{"device": "H100", "dtype": "float16", "date": "old"},
                       {"device": "H100", "dtype": "bfloat16", "date": "bf16"}],
           "rows": [_row("H100", "torch", 0.45), _row("H100", "torch", 0.5, dtype="bfloat16")]}
    new = ks.merged(old, _doc([], [_row("H100", "marlin", 1.5, checkpoint="gptq-sym")]))
    assert [(r["kernel"], r["dtype"]) for r in new["rows"]] == [
        ("torch", "bfloat16"), ("marlin", "float16")]
    assert [s["date"] for s in new["sources"]] == ["bf16", "new"]
    assert "kernels" not in new["sources"][-1]


def test_a_subset_writes_only_the_checkpoints_its_kernels_fit():
    assert ks.wanted({"awq_marlin"}) == ["gptq-sym", "gptq-asym", "ct-asym"]
    assert ks.wanted({"gemm"}) == ["awq"]  # AWQ's own GEMM kernel reads no other layout
    assert ks.wanted(set()) == list(ks.CHECKPOINTS)
