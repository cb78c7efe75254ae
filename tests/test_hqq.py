"""method=hqq (qrecipe/backends/hqq, qrecipe/kernels/hqq.py): the runner quantizes the tiny random
Llama on CPU with hqq, saves it with transformers' hqq quantization_config, and the checkpoint
reloads into HQQLinear layers (or dense ones) that score a finite perplexity; validate refuses a
width hqq does not pack in one line; the planner's hqq bytes are the bytes hqq writes."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT, compose
from omegaconf import OmegaConf

from qrecipe.inputs.shapes import ModelShape
from qrecipe.plan import estimate as est

pytest.importorskip("hqq")

# the tiny random Llama's quantized linears: q, k, v, o, gate, up, down in each of 2 layers
LAYERS = 14


@pytest.fixture(scope="module")
def hqq_run(tiny_model_dir, tmp_path_factory):
    """One runner job: hqq w4 g32 on the tiny Llama, evaluated on one short window (the reload
    through load_causal_lm; both kernels are compared below)."""
    from qrecipe.run.runner import run_job

    cfg = compose(["method=hqq", "bits=w4", "bits.group_size=32", "model=local",
                   f"model.path={tiny_model_dir}", "eval.max_windows=1", "eval.seq_len=32",
                   "eval.stride=32", "eval.speed=false"])
    out = tmp_path_factory.mktemp("hqq") / "run"
    assert run_job(cfg, out) == "ok"
    return out


@pytest.mark.e2e  # a runner job on the tiny Llama (~20 s of CPU)
def test_the_checkpoint_says_hqq_and_what_hqq_did(hqq_run):
    q = json.loads((hqq_run / "model" / "config.json").read_text())["quantization_config"]
    assert q["quant_method"] == "hqq" and q["skip_modules"] == ["lm_head"]
    params = q["quant_config"]["weight_quant_params"]
    assert (params["nbits"], params["group_size"], params["axis"]) == (4, 32, 1)
    metrics = json.loads((hqq_run / "metrics.json").read_text())
    assert metrics["format"] == "hqq"
    d = metrics["quantize_details"]
    # read back from the HQQLinear layers, not echoed from the recipe
    assert (d["nbits"], d["group_size"], d["axis"], d["packing"]) == (4, 32, 1, "4bit_u8")
    assert d["quantized_linear_layers"] == LAYERS and d["optimize"] is True
    # the evaluate stage reloaded it through hqq's layers (never plain transformers)
    assert metrics["kernel"]["resolved"] == "dequantized"
    assert math.isfinite(metrics["eval"]["quantized"]["ppl"])


@pytest.mark.e2e  # a runner job on the tiny Llama (~20 s of CPU)
def test_it_reloads_and_scores_a_finite_perplexity(hqq_run, tiny_model_dir):
    """hqq's own layers (kernel torch) and the dense weights (dequantized) give one perplexity."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qrecipe.evaluation.perplexity import perplexity
    from qrecipe.kernels.hqq import load_hqq
    from qrecipe.kernels.table import loaded_kernels

    tok = AutoTokenizer.from_pretrained(hqq_run / "model")
    text = "The quick brown fox jumps over the lazy dog near the river bank. " * 20
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
    e = OmegaConf.create({"seq_len": 64, "stride": 64, "max_windows": 2, "batch_size": 1})
    ppl, logits = {}, {}
    for kernel, modules in (("torch", {"HQQLinear": LAYERS}),
                            ("dequantized", {"Linear[dequantized]": LAYERS})):
        model = load_hqq(hqq_run / "model", "auto", "cpu", kernel)
        assert model.qrecipe_kernel == kernel and loaded_kernels(model) == modules
        ppl[kernel] = perplexity(model, ids, e, "quantized")["ppl"]
        with torch.no_grad():
            logits[kernel] = model(ids[None, :64]).logits
    assert ppl["torch"] is not None and math.isfinite(ppl["torch"]) and ppl["torch"] > 1
    assert ppl["dequantized"] == pytest.approx(ppl["torch"], rel=1e-5)
    # 4-bit: close to the original's logits, but not them (the weights really were rounded)
    fp = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        b = fp(ids[None, :64]).logits
    err = float((logits["torch"] - b).abs().mean() / b.abs().mean())
    assert 1e-4 < err < 0.3, err


def test_validate_refuses_a_width_hqq_does_not_pack_in_one_line():
    r = subprocess.run([sys.executable, "-m", "qrecipe", "validate", "smollm2_hqq_w4",
                        "bits.width=5"], capture_output=True, text=True, cwd=ROOT,
                       check=False)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert errors == [("error: bits.width=5: hqq via hqq does not support this bit width; "
                       "allowed: 2, 3, 4, 8")]


def _tiny_shape() -> ModelShape:
    return ModelShape(name="tiny", source="local", model_type="llama", hidden=64,
                      intermediate=128, layers=2, heads=4, kv_heads=4, head_dim=16,
                      vocab=49152, tied=True, dtype="float32")


@pytest.mark.e2e  # a runner job on the tiny Llama (~20 s of CPU)
def test_plan_counts_the_bytes_hqq_writes(hqq_run):
    """The planner's hqq4 g32 layer bytes are the saved quantized layers' tensor bytes."""
    from safetensors import safe_open

    saved = 0
    with safe_open(str(hqq_run / "model" / "model.safetensors"), "pt") as f:
        for k in f.keys():
            if ".layers." in k and not k.endswith("layernorm.weight"):
                t = f.get_tensor(k)
                saved += t.numel() * t.element_size()
    assert est.layer_bytes(_tiny_shape(), "hqq4", 32) * 2 == saved


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [32, -1])
def test_hqq_layer_bytes_match_hqq_linear_state(bits, group):
    """Every width's packing (3 bits: ten to an int32) and per-channel groups."""
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 64, bias=False)
    layer = HQQLinear(lin, BaseQuantizeConfig(nbits=bits, group_size=None if group < 0 else group,
                                              axis=1), compute_dtype=torch.float16, device="cpu")
    state = layer.state_dict()
    real = sum(t.numel() * t.element_size() for t in state.values())
    assert est._hqq_linear_bytes(128, 64, bits, group, 2) == real


def test_plan_json_carries_hqq_bytes_beside_each_width():
    from qrecipe.plan.build import build

    rows = build(_tiny_shape(), "cpu", group=32)["rows"]
    for width in (8, 4, 3, 2):
        r = rows[f"w{width}"]
        assert r["hqq_weights_bytes"] == est.weights_bytes(_tiny_shape(), f"hqq{width}", 32)
        assert r["hqq_disk_bytes"] > r["hqq_weights_bytes"]
    assert rows["w2"]["hqq_weights_bytes"] < rows["w4"]["hqq_weights_bytes"] < \
        rows["w8"]["hqq_weights_bytes"] < rows["fp32"]["weights_bytes"]


def test_plain_transformers_is_never_handed_an_hqq_checkpoint():
    """transformers 5.17 would load one with random weights in every quantized layer (MISSING):
    the config that reload passes to from_pretrained refuses instead, in one line."""
    from qrecipe.errors import QRecipeError
    from qrecipe.kernels import hf_config
    from qrecipe.kernels import table as kernels

    k = kernels.resolve("hqq", "cpu", "auto", fast_bf16=False)
    assert k.name == "dequantized" and kernels.resolve("hqq", "cuda").name == "torch"
    with pytest.raises(QRecipeError, match="cannot load an hqq checkpoint"):
        hf_config.quantization_config("hqq", k, {"quant_method": "hqq"})
    assert hf_config.load_lines("hqq", k, 4, "cpu")[0] == \
        "from qrecipe.kernels.hqq import load_hqq"
