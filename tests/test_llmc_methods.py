"""llm-compressor's preset methods end to end on CPU (qrecipe/backends/llmcompressor/schemes.py):
FP8, INT8 W8A8, AutoRound, NVFP4, MXFP4. Each run quantizes the tiny random Llama through the
runner, saves, reloads the checkpoint with the kernel qrecipe resolves and scores it: the saved
config.json must hold the scheme asked for and the perplexity must be finite (never a quality
claim: the model is random). Small calibration and eval (2 windows of 64 tokens) keep each run
to a few seconds on 2 cores."""
from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import compose, make_random_llama

from qrecipe.backends.capabilities import CAPABILITIES
from qrecipe.errors import QRecipeError

FAST = ["calibration=pydoc", "calibration.num_samples=4", "calibration.seq_len=32",
        "hardware=cpu", "eval.seq_len=64", "eval.stride=64", "eval.max_windows=2",
        "eval.baseline=false", "eval.speed=false"]


def _run(model_dir, out, overrides):
    from qrecipe.run.runner import run_job

    cfg = compose(["model=local", f"model.path={model_dir}", *FAST, *overrides])
    status = run_job(cfg, out)
    assert status == "ok", (out / "error.json").read_text()[:3000]
    m = json.loads((out / "metrics.json").read_text())
    saved = json.loads((out / "model" / "config.json").read_text())["quantization_config"]
    group = next(iter(saved["config_groups"].values()))
    assert m["format"] == "compressed-tensors" and saved["quant_method"] == "compressed-tensors"
    assert math.isfinite(m["eval"]["quantized"]["ppl"])
    return m, saved, group


def _case(name, *extra):
    return ["method=" + name, *extra]


CASES = {
    # method overrides, compression format, weights (type, bits, strategy), activations
    "fp8_dynamic": (_case("fp8", "bits=w8"), "float-quantized",
                    ("float", 8, "channel"), ("float", "token", True)),
    "fp8_static": (_case("fp8", "bits=w8", "method.scheme=static"), "float-quantized",
                   ("float", 8, "tensor"), ("float", "tensor", False)),
    "w8a8": (_case("w8a8", "bits=w8", "bits.group_size=-1"), "int-quantized",
             ("int", 8, "channel"), ("int", "token", True)),
    "nvfp4": (_case("nvfp4", "bits=w4", "bits.group_size=16"), "nvfp4-pack-quantized",
              ("float", 4, "tensor_group"), ("float", "tensor_group", "local")),
    "mxfp4": (_case("mxfp4", "bits=w4", "bits.group_size=32"), "mxfp4-pack-quantized",
              ("float", 4, "group"), ("float", "group", True)),
}


@pytest.mark.parametrize("key", list(CASES))
def test_preset_method_quantizes_saves_and_reloads_on_cpu(key, tiny_model_dir, tmp_path):
    overrides, fmt, (wtype, wbits, wstrategy), (atype, astrategy, adyn) = CASES[key]
    m, saved, group = _run(tiny_model_dir, tmp_path / "run", overrides)
    assert saved["format"] == fmt == CAPABILITIES["llmcompressor"][m["method"]].layout
    w, a = group["weights"], group["input_activations"]
    assert (w["type"], w["num_bits"], w["strategy"]) == (wtype, wbits, wstrategy)
    assert (a["type"], a["strategy"], a["dynamic"]) == (atype, astrategy, adyn)
    d = m["quantize_details"]
    assert d["scheme"]["strategy"] == wstrategy and d["activations"]["strategy"] == astrategy
    # calibration rows reach the library only where the scheme has static scales or smoothing
    uses = key in ("fp8_static", "w8a8", "nvfp4")
    assert d["uses_calibration"] is uses and (d["calibration_rows"] > 0) is uses
    # CPU reload: dense weights, activations quantized in forward, and the report says so
    assert d["reload_kernel"]["name"] == m["kernel"]["resolved"] == "emulated"
    assert any(k.startswith("Linear[compressed-tensors") for k in
               m["kernel"]["loaded_modules"])
    if key != "fp8_static":  # per tensor: the planner counts per-channel scales (an upper bound)
        _planner_counts_the_saved_linears(tiny_model_dir, tmp_path / "run" / "model",
                                          key.split("_")[0])


def _planner_counts_the_saved_linears(model_dir, saved_dir, fmt):
    """qrecipe plan's bytes (qrecipe/plan/estimate.py) = the quantized linears' saved tensors."""
    from safetensors import safe_open

    from qrecipe.inputs.shapes import read_shape
    from qrecipe.plan import estimate as est

    with safe_open(str(saved_dir / "model.safetensors"), "pt") as f:
        saved = sum(f.get_tensor(k).nbytes for k in f.keys() if "_proj." in k)
    shape = read_shape(str(model_dir))
    assert saved == shape.layers * est.layer_bytes(shape, fmt)


@pytest.mark.slow  # ~30 s on 2 cores: AutoRound's tuning loop, even at 2 iterations
def test_autoround_quantizes_saves_and_reloads_on_cpu(tiny_model_dir, tmp_path):
    # 16 rows forwarded 16 at a time: auto-round exits the process (status 255) when a cached
    # input holds more rows than its tuning batch (8); qrecipe forwards 8 at a time
    m, saved, group = _run(tiny_model_dir, tmp_path / "run",
                           ["method=autoround", "method.iters=2", "bits=w4",
                            "bits.group_size=32", "calibration.num_samples=16",
                            "hardware.calib_batch_size=16"])
    assert saved["format"] == "pack-quantized" and group["input_activations"] is None
    w = group["weights"]
    assert (w["type"], w["num_bits"], w["strategy"], w["group_size"]) == ("int", 4, "group", 32)
    d = m["quantize_details"]
    assert d["algorithm"] == "AutoRoundModifier" and d["autoround"]["iters"] == 2
    assert d["autoround"]["preset_iters"] == 200  # auto-round's own `default` recipe
    assert d["calibration_rows"] == 16 and d["calib_batch_size"] == 8
    assert m["kernel"]["resolved"] != "emulated"  # int weight-only: the usual kernels


@pytest.mark.slow  # ~25 s: a second random model, 128 wide
def test_fp8_block_quantizes_a_model_whose_widths_are_multiples_of_128(tmp_path):
    model_dir = make_random_llama(tmp_path / "m", 128, 256)
    m, saved, group = _run(model_dir, tmp_path / "run",
                           ["method=fp8", "method.scheme=block", "bits=w8"])
    assert group["weights"]["strategy"] == "block"
    assert group["weights"]["block_structure"] == [128, 128]
    assert m["quantize_details"]["calibration_rows"] == 0


def test_fp8_block_refuses_widths_128_does_not_divide(tiny_model_dir, tmp_path):
    from qrecipe.run.runner import run_job

    cfg = compose(["model=local", f"model.path={tiny_model_dir}", *FAST, "method=fp8",
                   "method.scheme=block", "bits=w8"])
    assert run_job(cfg, tmp_path / "run") == "user_error"
    err = json.loads((tmp_path / "run" / "error.json").read_text())
    assert "groups of 128" in json.dumps(err) and "method.scheme" in json.dumps(err)


@pytest.mark.parametrize("overrides, key", [
    (["method=fp8", "bits=w4"], "bits.width"),  # FP8 is 8 bits
    (["method=nvfp4", "bits=w4"], "bits.group_size"),  # NVFP4's group is 16, not 128
    (["method=mxfp4", "bits=w4", "bits.group_size=16"], "bits.group_size"),
    (["method=w8a8", "bits=w8"], "bits.group_size"),  # per channel only
])
def test_validate_says_one_line_for_what_the_format_fixes(overrides, key, tiny_model_dir):
    from qrecipe.run.validate import validate

    cfg = compose(["model=local", f"model.path={tiny_model_dir}", *FAST, *overrides])
    with pytest.raises(QRecipeError) as e:
        validate(cfg, here=False)
    assert e.value.key == key and "\n" not in str(e.value)


@pytest.mark.parametrize("overrides, key", [
    (["method=fp8", "method.scheme=fp8_dynamic"], "method.scheme"),
    (["method=w8a8", "method.smoothing_strength=1.5"], "method.smoothing_strength"),
    (["method=autoround", "method.preset=fast"], "method.preset"),
])
def test_option_values_are_checked_before_any_weight(overrides, key):
    from qrecipe.backends.llmcompressor import schemes

    with pytest.raises(QRecipeError) as e:
        schemes.check(compose(overrides).method)
    assert e.value.key == key


def test_a_typo_in_a_method_key_fails_at_composition():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose(["method=fp8", "method.schem=static"])


def test_capability_rows_encode_what_each_format_fixes():
    llmc = CAPABILITIES["llmcompressor"]
    assert llmc["fp8"].bits == (8,) and llmc["fp8"].group_sizes is None
    assert llmc["w8a8"].group_sizes == (-1,)
    assert (llmc["nvfp4"].bits, llmc["nvfp4"].group_sizes) == ((4,), (16,))
    assert (llmc["mxfp4"].bits, llmc["mxfp4"].group_sizes) == ((4,), (32,))
    assert not llmc["mxfp4"].needs_calibration
    assert all(llmc[m].format == "compressed-tensors" for m in
               ("fp8", "w8a8", "autoround", "nvfp4", "mxfp4"))


def test_emulated_kernel_only_for_activation_or_float_schemes():
    from qrecipe.kernels import table as kernels

    fp8 = {"config_groups": {"g": {"weights": {"type": "float", "num_bits": 8},
                                   "input_activations": {"type": "float"}}},
           "format": "float-quantized"}
    facts = kernels.saved_facts("compressed-tensors", fp8)
    assert facts == {"convertible": False, "emulated": True, "fp8": True}
    nvfp4a16 = {"config_groups": {"g": {"weights": {"type": "float", "num_bits": 4}}},
                "format": "nvfp4-pack-quantized"}  # weight-only FP4: float weights
    assert kernels.saved_facts("compressed-tensors", nvfp4a16)["emulated"] is True
    assert kernels.resolve("compressed-tensors", "cpu", **facts).name == "emulated"
    # FP8 weights on Hopper: transformers' FP8 matmul (tests/test_kernels.py)
    assert kernels.resolve("compressed-tensors", "cuda", allow_jit=True, cc=9.0,
                           **facts).name == "fp8"
    int4 = {"config_groups": {"g": {"weights": {"type": "int", "num_bits": 4,
                                                "strategy": "group", "group_size": 32,
                                                "symmetric": True}}},
            "format": "pack-quantized"}
    facts = kernels.saved_facts("compressed-tensors", int4)
    assert "emulated" not in facts
    assert kernels.resolve("compressed-tensors", "cpu", fast_bf16=False, **facts).name \
        == "compressed"
    with pytest.raises(QRecipeError, match="weight-and-activation or float schemes only"):
        kernels.resolve("compressed-tensors", "cpu", "emulated", emulated=False)


def test_fp4_weights_decompressed_in_bfloat16_are_cast_to_the_model_dtype():
    from qrecipe.kernels.dense import match_decompressed_dtype

    model = torch.nn.Module()
    model.emb = torch.nn.Embedding(4, 8)
    model.lin = torch.nn.Linear(8, 8, bias=False).to(torch.bfloat16)
    model.lin.quantization_scheme = object()
    model.plain = torch.nn.Linear(8, 8, bias=False).to(torch.bfloat16)  # not compressed-tensors
    model.get_input_embeddings = lambda: model.emb
    before = model.lin.weight.detach().clone()
    assert match_decompressed_dtype(model) == 1
    assert model.lin.weight.dtype == torch.float32 and model.plain.weight.dtype == torch.bfloat16
    assert torch.equal(model.lin.weight.to(torch.bfloat16), before)  # exact


def test_presets_and_data_use_per_option():
    from qrecipe.backends.llmcompressor import schemes

    def method(*o):
        return compose(list(o)).method
    assert [schemes.preset(method("method=fp8", f"method.scheme={s}")) for s in
            ("dynamic", "static", "block")] == ["FP8_DYNAMIC", "FP8", "FP8_BLOCK"]
    assert schemes.preset(method("method=nvfp4", "method.activations=false")) == "NVFP4A16"
    assert schemes.preset(method("method=mxfp4")) == "MXFP4"
    assert not schemes.uses_rows(method("method=nvfp4", "method.activations=false"))
    assert schemes.uses_rows(method("method=nvfp4"))  # the activations' global scale
    assert not schemes.uses_rows(method("method=fp8"))
    light = schemes.autoround_settings(method("method=autoround", "method.preset=light"))
    assert (light["iters"], light["lr"], light["batch_size"]) == (50, 5e-3, 8)
    assert schemes.autoround_settings(method("method=autoround", "method.preset=best",
                                             "method.iters=7"))["iters"] == 7
    # rows per calibration forward: AutoRound's at most its tuning batch (auto-round exits the
    # process on larger cached inputs); every other method takes the profile's
    ar = method("method=autoround")
    assert [schemes.forward_batch(ar, 32, n) for n in (128, 4)] == [8, 4]
    assert schemes.forward_batch(ar, 2, 128) == 2
    assert schemes.forward_batch(method("method=w8a8"), 32, 128) == 32


def test_smoothing_resolves_per_architecture():
    """method.smoothing_strength unset: SmoothQuant at 0.8 where its scales fold into the
    model's norms, none on Gemma 2/3 (llm-compressor 0.14 folds them into the wrong norm there:
    1.6e11 ppl on Gemma 3 270M; without it +0.77); a set value is used as given, 0 is none."""
    from qrecipe.backends.llmcompressor import schemes

    def method(*o):
        return compose(list(o)).method
    unset = method("method=w8a8")
    assert unset.smoothing_strength is None
    assert schemes.smoothing(unset, "LlamaForCausalLM") == 0.8
    assert schemes.smoothing(unset, "Gemma3ForCausalLM") == 0.0
    assert schemes.smoothing(unset, "Gemma2ForCausalLM") == 0.0
    assert schemes.algorithm(unset, "Gemma3ForCausalLM") == "GPTQModifier"
    assert schemes.algorithm(unset, "LlamaForCausalLM") == "SmoothQuantModifier+GPTQModifier"
    off = method("method=w8a8", "method.smoothing_strength=0")
    assert schemes.smoothing(off, "LlamaForCausalLM") == 0.0
    schemes.check(off)  # 0 is allowed: no SmoothQuant
    schemes.check_model(off, "Gemma3ForCausalLM")  # and sound on Gemma
    schemes.check_model(unset, "Gemma3ForCausalLM")
    with pytest.raises(QRecipeError, match="method.smoothing_strength=0.5"):
        schemes.check_model(method("method=w8a8", "method.smoothing_strength=0.5"),
                            "Gemma3ForCausalLM")
