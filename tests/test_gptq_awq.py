"""qrecipe/kernels/gptq_awq.py: a 4-bit GPTQ (v1 or v2) or compressed-tensors checkpoint rewritten
into AWQ's GEMM layout must hold the same weights, so AWQ Marlin (CUDA) can serve asymmetric
checkpoints. Tensors are read back by gptqmodel's own unpackers (GPTQ: TorchLinear; AWQ:
dequantize_gemm), so a wrong order, orientation or zero-point offset fails here; whole
checkpoints reload on the CPU with AWQ's torch kernel and give the original's logits."""
from __future__ import annotations

import json

import pytest

from qrecipe.errors import QRecipeError
from qrecipe.kernels import gptq_awq
from qrecipe.kernels import table as kernels

torch = pytest.importorskip("torch")

V1 = 0x11111111


def _signed(words):
    return (words - ((words >> 31) << 32)).to(torch.int32)


def _pack_gptq(q, z, v1: bool):
    """GPTQ tensors of integer weights q [in, out] and zero points z [groups, out]."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int64)
    qweight = (q.view(-1, 8, q.shape[1]).to(torch.int64) << shifts.view(1, 8, 1)).sum(1)
    qzeros = (z.view(z.shape[0], -1, 8).to(torch.int64) << shifts).sum(-1)
    if v1:  # gptqmodel's v2 -> v1: the packed word minus one per zero point (borrows and all)
        qzeros = (qzeros - V1) % (1 << 32)
    return _signed(qweight), _signed(qzeros)


def _gptq_module(in_f=256, out_f=64, group=32, v1=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    groups = in_f // group
    q = torch.randint(0, 16, (in_f, out_f), generator=g)
    z = torch.randint(0, 16, (groups, out_f), generator=g)
    z[0, :8] = 0  # zero points of 0: what the v1 "minus one" borrows across
    z[1, :8] = 15
    scales = (torch.rand(groups, out_f, generator=g) * 0.01 + 1e-3).half()
    qweight, qzeros = _pack_gptq(q, z, v1)
    t = {"qweight": qweight, "qzeros": qzeros, "scales": scales,
         "g_idx": torch.arange(in_f, dtype=torch.int32) // group}
    want = ((q - z.repeat_interleave(group, 0)) * scales.float().repeat_interleave(group, 0))
    return t, want  # want: [in, out]


def _awq_weight(t, group):
    from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm
    return dequantize_gemm(t["qweight"], t["qzeros"], t["scales"].float(), 4, group)


@pytest.mark.parametrize("v1", [False, True])
def test_rewritten_tensors_dequantize_to_the_same_weights(v1):
    t, want = _gptq_module(v1=v1)
    s = gptq_awq.Scheme(group_size=32, sym=False, v1=v1)
    a = gptq_awq.convert_module(t, s)
    assert a["qweight"].shape == (256, 8) and a["qzeros"].shape == (8, 8)
    assert a["qweight"].dtype == a["qzeros"].dtype == torch.int32
    assert torch.equal(_awq_weight(a, 32), want)
    assert torch.equal(a["scales"], t["scales"])


def test_the_reference_is_gptqmodels_own_gptq_reading():
    """The packing helper above is GPTQ's layout: gptqmodel's TorchLinear reads it as `want`."""
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    t, want = _gptq_module()
    ql = TorchLinear(bits=4, group_size=32, sym=False, desc_act=False, in_features=256,
                     out_features=64, bias=False)
    ql.qweight, ql.qzeros, ql.scales, ql.g_idx = t["qweight"], t["qzeros"], \
        t["scales"].float(), t["g_idx"]
    ql.post_init()
    ql.train()
    assert torch.equal(ql.dequantize_weight().float(), want)


def test_v1_zero_points_are_read_as_v1():
    """The same integers written v1 and v2 give the same AWQ tensors; v1 read as v2 does not."""
    t1, _ = _gptq_module(v1=True)
    t2, _ = _gptq_module(v1=False)
    a1 = gptq_awq.convert_module(t1, gptq_awq.Scheme(32, False, v1=True))
    a2 = gptq_awq.convert_module(t2, gptq_awq.Scheme(32, False, v1=False))
    assert torch.equal(a1["qzeros"], a2["qzeros"]) and torch.equal(a1["qweight"], a2["qweight"])
    wrong = gptq_awq.convert_module(t1, gptq_awq.Scheme(32, False, v1=False))
    assert not torch.equal(wrong["qzeros"], a2["qzeros"])


def test_act_order_and_other_widths_are_refused():
    t, _ = _gptq_module()
    t["g_idx"] = t["g_idx"][torch.randperm(256, generator=torch.Generator().manual_seed(1))]
    with pytest.raises(QRecipeError, match="column order"):
        gptq_awq.convert_module(t, gptq_awq.Scheme(32, False, v1=False))
    base = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": False}
    with pytest.raises(QRecipeError, match="desc_act"):
        gptq_awq.scheme({**base, "desc_act": True})
    with pytest.raises(QRecipeError, match="8-bit"):
        gptq_awq.scheme({**base, "bits": 8})
    assert gptq_awq.scheme(base) == gptq_awq.Scheme(128, False, v1=True)  # v1: gptq's default
    assert not gptq_awq.scheme({**base, "checkpoint_format": "gptq_v2"}).v1


def test_kernel_table_offers_awq_marlin_where_gptq_marlin_refuses():
    k = kernels.resolve("gptq", "cuda", "awq_marlin", True, cc=9.0, sym=False, bits=4,
                        group_size=128)
    assert (k.name, k.via, k.via_kernel, k.hf_backend) == ("awq_marlin", "awq", "marlin",
                                                           "marlin")
    assert kernels.loads_as("gptq", k) == ("awq", kernels.get("awq", "marlin"))
    with pytest.raises(QRecipeError, match="symmetric"):
        kernels.resolve("gptq", "cuda", "marlin", True, cc=9.0, sym=False)
    with pytest.raises(QRecipeError, match="rewrite"):  # act-order: no AWQ layout
        kernels.resolve("gptq", "cuda", "awq_marlin", True, cc=9.0,
                        **kernels.saved_facts("gptq", {"bits": 4, "desc_act": True}))
    with pytest.raises(QRecipeError, match="4-bit"):
        kernels.resolve("gptq", "cuda", "awq_marlin", True, cc=9.0, bits=8)
    with pytest.raises(QRecipeError, match="compute capability"):
        kernels.resolve("gptq", "cuda", "awq_marlin", True, cc=7.5)
    ct = kernels.resolve("compressed-tensors", "cuda", "awq_marlin", True, cc=9.0, sym=False,
                         bits=4)
    assert ct.via == "awq"
    from qrecipe.kernels.build import extensions_of
    assert [e.name for e in extensions_of("gptq", "awq_marlin")] == ["marlin_fp16", "marlin_bf16"]
    # measured (kernels/measured.json, H100): 1.47x fp16 against the torch kernel's 0.45x
    assert kernels.resolve("gptq", "cuda", "auto", True, cc=9.0, sym=False).name == "awq_marlin"
    assert kernels.resolve("gptq", "cuda", "auto", False, cc=9.0, sym=False).name == "torch"


def _gptq_checkpoint(tiny_model_dir, out, v1=True):
    """The tiny Llama with every decoder Linear as 4-bit GPTQ (g32, asymmetric, random
    integers), written as gptqmodel writes it (v1 zero points by default)."""
    from safetensors.torch import load_file, save_file
    sd = load_file(str(tiny_model_dir / "model.safetensors"))
    out.mkdir(parents=True)
    tensors, seed = {}, 0
    for name, w in sd.items():
        mod = name[: -len(".weight")]
        if ".layers." in name and w.dim() == 2:
            seed += 1
            t, _ = _gptq_module(w.shape[1], w.shape[0], 32, v1=v1, seed=seed)
            tensors.update({f"{mod}.{k}": v for k, v in t.items()})
        else:
            tensors[name] = w
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    conf = json.loads((tiny_model_dir / "config.json").read_text())
    conf["quantization_config"] = {
        "quant_method": "gptq", "bits": 4, "group_size": 32, "sym": False, "desc_act": False,
        "format": "gptq", "checkpoint_format": "gptq" if v1 else "gptq_v2",
        "true_sequential": True}
    (out / "config.json").write_text(json.dumps(conf))
    for f in tiny_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            (out / f.name).write_bytes(f.read_bytes())
    return out


def test_a_rewritten_checkpoint_reloads_with_the_same_logits(tiny_model_dir, tmp_path):
    from qrecipe.inputs import models
    src = _gptq_checkpoint(tiny_model_dir, tmp_path / "gptq")
    dst = gptq_awq.convert(src, tmp_path / "awq")
    q = json.loads((dst / "config.json").read_text())["quantization_config"]
    assert (q["quant_method"], q["version"], q["group_size"], q["zero_point"]) == \
        ("awq", "gemm", 32, True)
    assert q["modules_to_not_convert"] is None  # every decoder Linear is quantized
    assert (dst / "tokenizer.json").is_symlink()
    # float16: both torch kernels compute (q - z) * s and the matmul in it, so the logits match
    # bit for bit (bfloat16 rounds their steps differently)
    ref = models.load_causal_lm(src, "float16", "cpu", kernel="torch")
    got = models.load_causal_lm(dst, "float16", "cpu", kernel="torch")
    assert kernels.loaded_kernels(ref) == {"TorchLinear": 14}
    assert kernels.loaded_kernels(got) == {"AwqTorchLinear": 14}
    ids = torch.arange(1, 33).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(got(ids).logits, ref(ids).logits)


def test_a_decoder_linear_left_dense_is_kept_out_of_the_awq_loader():
    z = torch.zeros
    tensors = {"model.embed_tokens.weight": z(8, 4), "lm_head.weight": z(8, 4),
               "model.layers.0.input_layernorm.weight": z(4),
               "model.layers.0.mlp.up_proj.qweight": z(1, 8),
               "model.layers.0.mlp.down_proj.weight": z(4, 8),
               "model.layers.1.mlp.up_proj.qweight": z(1, 8)}
    prefixes = ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]
    assert gptq_awq._unquantized(tensors, prefixes) == ["model.layers.0.mlp.down_proj"]
    del tensors["model.layers.0.mlp.down_proj.weight"]
    assert gptq_awq._unquantized(tensors, prefixes) is None


def test_the_byte_level_repack_is_the_arithmetic_one_on_every_bit_pattern():
    """_nibbles and _words read words as little-endian bytes; against shifts and masks on
    int64, over random words of the full int32 range (negative ones: a high nibble >= 8)."""
    g = torch.Generator().manual_seed(1)
    words = torch.randint(-2**31, 2**31 - 1, (64, 16), dtype=torch.int32, generator=g)
    words[0, :2] = torch.tensor([-1, -2**31], dtype=torch.int32)
    w = words.to(torch.int64) & 0xFFFFFFFF
    want = torch.stack([(w >> (4 * k)) & 15 for k in range(8)], dim=-1)
    nib = gptq_awq._nibbles(words)
    assert nib.dtype == torch.uint8 and torch.equal(nib.to(torch.int64), want)
    assert torch.equal(gptq_awq._words(nib), words)
    order = gptq_awq.AWQ_ORDER
    packed = sum(want[..., order[k]] << (4 * k) for k in range(8))
    assert torch.equal(gptq_awq._words(nib, order).to(torch.int64) & 0xFFFFFFFF, packed)
