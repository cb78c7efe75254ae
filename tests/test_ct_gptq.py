"""qrecipe/kernels/ct_gptq.py: a compressed-tensors pack-quantized checkpoint rewritten into the GPTQ
layout must hold the same weights. Tensors come from compressed-tensors' own compressor and are
read back by gptqmodel's own GPTQ unpacker (TorchLinear.dequantize_weight), so a wrong
orientation, offset or zero-point packing fails here; a whole checkpoint (llm-compressor RTN on a
tiny Llama) reloads through qrecipe's kernel table with the converted path and gives the
decompressed model's logits."""
from __future__ import annotations

import json

import pytest

from qrecipe.errors import QRecipeError
from qrecipe.kernels import ct_gptq
from qrecipe.kernels import table as kernels

torch = pytest.importorskip("torch")


def _ct_tensors(bits, sym, group_size, out_f=64, in_f=256, actorder=False):
    """One Linear as compressed-tensors saves it (its compressor), and the weight it decompresses
    to (float32)."""
    from compressed_tensors.compressors.pack_quantized.base import (
        PackedQuantizationCompressor,
    )
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    torch.manual_seed(bits * 10 + sym)
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=sym,
                            strategy="group" if group_size > 0 else "channel",
                            group_size=group_size if group_size > 0 else None)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    groups = in_f // group_size if group_size > 0 else 1
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    scale = torch.rand(out_f, groups) * 0.01 + 1e-3
    zp = torch.randint(lo, hi + 1, (out_f, groups), dtype=torch.int8) if not sym else \
        torch.zeros(out_f, groups, dtype=torch.int8)
    zp[0, 0] = lo if not sym else 0  # a zero point of 0 unsigned: what GPTQ v1 cannot store
    g = torch.arange(in_f) // (group_size if group_size > 0 else in_f)
    if actorder:
        g = g[torch.randperm(in_f)]
    q = torch.randint(lo, hi + 1, (out_f, in_f)).float()
    w = (q - zp.float()[:, g]) * scale[:, g]
    sd = {"weight": w, "weight_scale": scale, "weight_zero_point": zp}
    if actorder:
        sd["weight_g_idx"] = g.to(torch.int32)
    ct = PackedQuantizationCompressor.compress(sd, scheme)
    dec = PackedQuantizationCompressor.decompress(dict(ct), scheme)["weight"].float()
    s = ct_gptq.Scheme(bits=bits, group_size=group_size, sym=sym)
    return ct, dec, s


def _gptqmodel_dequantize(t, bits, group_size, in_f, out_f):
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    ql = TorchLinear(bits=bits, group_size=group_size if group_size > 0 else in_f, sym=False,
                     desc_act=False, in_features=in_f, out_features=out_f, bias=False)
    ql.qweight, ql.qzeros = t["qweight"], t["qzeros"]
    ql.scales, ql.g_idx = t["scales"].float(), t["g_idx"]
    ql.post_init()
    ql.train()  # the plain unpacking path, not the cached inference one
    return ql.dequantize_weight().T.float()


@pytest.mark.parametrize("group_size", [32, -1])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_converted_tensors_dequantize_to_the_same_weights(bits, sym, group_size):
    ct, dec, s = _ct_tensors(bits, sym, group_size)
    g = ct_gptq.convert_module(ct, s)
    assert g["qweight"].dtype == torch.int32 and g["qweight"].shape == (256 * bits // 32, 64)
    assert torch.equal(_gptqmodel_dequantize(g, bits, group_size, 256, 64), dec)


def test_act_order_groups_are_refused():
    ct, _, s = _ct_tensors(4, False, 32, actorder=True)
    with pytest.raises(QRecipeError, match="column order"):
        ct_gptq.convert_module(ct, s)
    with pytest.raises(QRecipeError, match="actorder"):
        ct_gptq.scheme(_saved(actorder="group"))
    assert ct_gptq.scheme(_saved(actorder="weight")).bits == 4  # columns visited, no g_idx


def _saved(**w):
    weights = {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group",
               "group_size": 128, **w}
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
            "config_groups": {"group_0": {"format": "pack-quantized", "targets": ["Linear"],
                                          "weights": weights, "input_activations": None}}}


def test_scheme_accepts_int_weight_only_and_refuses_the_rest():
    assert ct_gptq.scheme(_saved()) == ct_gptq.Scheme(4, 128, False)
    assert ct_gptq.scheme(_saved(strategy="channel", group_size=None)).group_size == -1
    assert kernels.saved_facts("compressed-tensors", _saved(symmetric=True)) == \
        {"sym": True, "bits": 4, "group_size": 128}
    for bad, word in ((_saved(num_bits=3), "3-bit"), (_saved(type="float"), "float"),
                      (_saved(strategy="tensor"), "strategy tensor")):
        with pytest.raises(QRecipeError, match=word):
            ct_gptq.scheme(bad)
        assert kernels.saved_facts("compressed-tensors", bad) == {"convertible": False}
    with pytest.raises(QRecipeError, match="KV cache"):
        ct_gptq.scheme({**_saved(), "kv_cache_scheme": {"num_bits": 8, "type": "float"}})
    fp8 = _saved()
    fp8["config_groups"]["group_0"]["input_activations"] = {"num_bits": 8, "type": "float"}
    with pytest.raises(QRecipeError, match="activations"):
        ct_gptq.scheme(fp8)


def test_kernel_table_routes_compressed_tensors_through_gptq():
    k = kernels.resolve("compressed-tensors", "cuda", "exllama_v2", True, cc=9.0, sym=False)
    assert (k.name, k.via) == ("exllama_v2", "gptq")
    # auto: AWQ Marlin on the rewritten layout, measured fastest (1.47x fp16 against its own
    # kernel's 1.00x; ExLlamaV2 has no valid measurement)
    assert kernels.resolve("compressed-tensors", "cuda", "auto", True, cc=9.0,
                           sym=False).name == "awq_marlin"
    # without a compile the measured default stays; Marlin takes no zero points
    assert kernels.resolve("compressed-tensors", "cuda", "auto", False, cc=9.0,
                           sym=False).name == "compressed"
    with pytest.raises(QRecipeError, match="symmetric"):
        kernels.resolve("compressed-tensors", "cuda", "marlin", True, cc=9.0, sym=False)
    assert kernels.resolve("compressed-tensors", "cpu", "torch").via == "gptq"


@pytest.fixture(scope="module")
def ct_checkpoint(tiny_model_dir, tmp_path_factory):
    """llm-compressor RTN (w4 g32, asymmetric) of the tiny Llama, saved compressed."""
    pytest.importorskip("llmcompressor")
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out = tmp_path_factory.mktemp("ct_w4")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    w = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=32)
    oneshot(model=model, recipe=[QuantizationModifier(
        config_groups={"g": QuantizationScheme(targets=["Linear"], weights=w)},
        ignore=["lm_head"])])
    model.save_pretrained(out, save_compressed=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_reload_with_a_gptq_kernel_gives_the_decompressed_logits(ct_checkpoint, tmp_path):
    from qrecipe.inputs import models
    before = sorted(p.name for p in ct_checkpoint.iterdir())
    m = models.load_causal_lm(ct_checkpoint, "bfloat16", "cpu", kernel="torch")
    ref = models.load_causal_lm(ct_checkpoint, "bfloat16", "cpu", kernel="dequantized")
    assert m.qrecipe_kernel == "torch"
    assert kernels.loaded_kernels(m) == {"TorchLinear": 14}
    ids = torch.arange(1, 33).unsqueeze(0)
    with torch.no_grad():
        a, b = m(ids).logits.float(), ref(ids).logits.float()
    # bf16: the dense path rounds (q - z) * s once, GPTQ's kernel after casting the scales
    assert (a - b).abs().max() < 0.02 * b.abs().max()
    assert sorted(p.name for p in ct_checkpoint.iterdir()) == before  # the result is untouched


def test_convert_writes_a_gptq_v2_checkpoint(ct_checkpoint, tmp_path):
    dst = ct_gptq.convert(ct_checkpoint, tmp_path / "g")
    q = json.loads((dst / "config.json").read_text())["quantization_config"]
    assert (q["quant_method"], q["format"], q["bits"], q["group_size"], q["sym"]) == \
        ("gptq", "gptq_v2", 4, 32, False)
    assert q["modules_in_block_to_quantize"] == [sorted(
        ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj", "self_attn.o_proj",
         "self_attn.q_proj", "self_attn.v_proj"])]
    assert (dst / "tokenizer.json").is_symlink()
    from safetensors import safe_open
    with safe_open(str(dst / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "model.layers.0.mlp.down_proj.qweight" in names
    assert not any("weight_packed" in n or "weight_shape" in n for n in names)


def test_auto_falls_back_when_only_the_tensors_refuse_the_rewrite(ct_checkpoint, monkeypatch):
    """Some refusals need the tensors (3-D experts, odd shapes): under `auto` the checkpoint then
    loads with its own no-build kernel; a kernel asked by name stops with the reason."""
    from qrecipe.inputs import models

    def refuse(src, dst):
        raise ct_gptq._unfit("a 8x64x128 weight does not map onto a GPTQ Linear")

    monkeypatch.setattr(ct_gptq, "convert", refuse)
    monkeypatch.setattr(kernels, "resolve",
                        lambda *a, **k: kernels.get("compressed-tensors", "torch"))
    m = models.load_causal_lm(ct_checkpoint, "bfloat16", "cpu", kernel="auto")
    assert m.qrecipe_kernel == "compressed"
    with pytest.raises(QRecipeError, match="8x64x128"):
        models.load_causal_lm(ct_checkpoint, "bfloat16", "cpu", kernel="torch")


def test_three_dimensional_weights_are_refused():
    ct, _, s = _ct_tensors(4, True, 32)
    ct["weight_shape"] = torch.tensor([2, 32, 256])
    with pytest.raises(QRecipeError, match="2x32x256"):
        ct_gptq.convert_module(ct, s)


def test_the_awq_layout_of_it_gives_the_gptq_layouts_logits(ct_checkpoint, tmp_path):
    """compressed-tensors -> GPTQ (v2) -> AWQ (kernels/gptq_awq.py), the layout AWQ Marlin
    serves on CUDA: on the CPU, AWQ's torch kernel gives the GPTQ torch kernel's logits bit for
    bit (float16)."""
    from qrecipe.inputs import models
    from qrecipe.kernels import gptq_awq
    dst = gptq_awq.convert(ct_checkpoint, tmp_path / "awq")
    assert json.loads((dst / "config.json").read_text())["quantization_config"]["group_size"] \
        == 32
    ref = models.load_causal_lm(ct_checkpoint, "float16", "cpu", kernel="torch")
    got = models.load_causal_lm(dst, "float16", "cpu", kernel="torch")
    assert kernels.loaded_kernels(got) == {"AwqTorchLinear": 14}
    ids = torch.arange(1, 33).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(got(ids).logits, ref(ids).logits)
