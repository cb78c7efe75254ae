"""qrecipe/backends/gptqmodel/fastloop.py: the GPU layer-loop patches must give gptqmodel's own
bytes. On the CPU: the vectorized pack against gptqmodel's reference packer (pack_original), the
sync-free scale search against upstream find_params; on a GPU: a whole quantize() with and
without the patches, packed tensors compared bit for bit."""
from __future__ import annotations

import functools

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gptqmodel")


def _reference_pack(bits, w, scales, zeros, g_idx):
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    out_f, in_f = w.shape
    ql = TorchLinear(bits=bits, group_size=128, sym=False, desc_act=False, in_features=in_f,
                     out_features=out_f, bias=False)
    lin = torch.nn.Linear(in_f, out_f, bias=False)
    lin.weight.data = w.clone()
    ql.pack_original(lin, scales.clone(), zeros.clone(), g_idx.clone())
    return ql.qweight, ql.qzeros


@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_vectorized_pack_equals_gptqmodels_reference_packer(bits, shuffled):
    """Quantized weights, scales and zeros as GPTQ returns them (float32 scales [out, groups]);
    a small block_in makes pack_core cross block boundaries; shuffled: desc_act's g_idx."""
    from qrecipe.backends.gptqmodel.fastloop import pack_core, pack_zeros
    torch.manual_seed(bits)
    out_f, in_f, maxq = 64, 512, 2 ** bits - 1
    groups = in_f // 128
    scales = torch.rand(out_f, groups) * 0.01 + 1e-3
    zeros = torch.randint(0, maxq + 1, (out_f, groups)).float()
    order = torch.randperm(in_f) if shuffled else torch.arange(in_f)
    g_idx = (order // 128).to(torch.int32)
    ints = torch.randint(0, maxq + 1, (out_f, in_f)).float()
    w = ((ints - zeros[:, g_idx.long()]) * scales[:, g_idx.long()]).to(torch.float16)
    ref_q, ref_z = _reference_pack(bits, w, scales, zeros, g_idx)
    sg, zg = scales.T.contiguous(), zeros.T.contiguous()
    q = pack_core(w, sg, zg * sg, g_idx.long(), bits, maxq, torch.int32, block_in=192)
    assert q.dtype == ref_q.dtype and torch.equal(q, ref_q)
    assert torch.equal(pack_zeros(zg, bits, torch.int32), ref_z)


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_syncfree_scale_search_equals_upstream(monkeypatch, sym, bits):
    from gptqmodel import QuantizeConfig
    from gptqmodel.quantization.quantizer import Quantizer

    from qrecipe.backends.gptqmodel.fastloop import fast_layer_loop
    q = QuantizeConfig(bits=bits, group_size=128, sym=sym, desc_act=False)
    upstream = Quantizer(q)
    upstream.configure(perchannel=True)
    torch.manual_seed(bits)
    calls = []  # which quantizers reached upstream's find_params
    original = Quantizer.find_params

    @functools.wraps(original)  # the guard fingerprints the function it wraps (upstream's)
    def spy(self, x, weight=False):
        calls.append(self)
        return original(self, x, weight)
    monkeypatch.setattr(Quantizer, "find_params", spy)
    with fast_layer_loop(True) as applied:
        assert applied
        patched = Quantizer(q)
        patched.configure(perchannel=True)
        for rows in (torch.randn(256, 128), torch.randn(256, 128).abs(),
                     -torch.randn(256, 128).abs(), torch.randn(256, 128).half().float()):
            rows[0] = 0  # an all-zero row: upstream maps it to [-1, 1]
            upstream.find_params(rows, weight=True)
            patched.find_params(rows, weight=True)
            assert torch.equal(upstream.scale, patched.scale)
            assert torch.equal(upstream.zero, patched.zero)
    # upstream's quantizer (configured before the patch) took upstream's path, the patched one
    # never did: the sync-free code is what was compared
    assert any(c is upstream for c in calls) and not any(c is patched for c in calls)


def test_patches_are_restored():
    from gptqmodel.models.base import BaseQModel
    from gptqmodel.nn_modules.qlinear import PackableQuantLinear
    from gptqmodel.quantization.quantizer import Quantizer

    from qrecipe.backends.gptqmodel.fastloop import fast_layer_loop
    before = (BaseQModel.post_quantize, PackableQuantLinear.pack_gpu, Quantizer.find_params,
              Quantizer.configure)
    with fast_layer_loop(True):
        assert Quantizer.find_params is not before[2]
    with fast_layer_loop(False):
        assert Quantizer.find_params is before[2]
    assert (BaseQModel.post_quantize, PackableQuantLinear.pack_gpu, Quantizer.find_params,
            Quantizer.configure) == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_loop_quantizes_to_the_same_bytes_on_gpu(tmp_path):
    """A tiny random Llama quantized twice by gptqmodel on the GPU, with qrecipe's settings,
    without and with the patches: every packed tensor identical."""
    from conftest import make_random_llama
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig

    from qrecipe.backends.gptqmodel.fastloop import fast_layer_loop
    model_dir = make_random_llama(tmp_path, 256, 512, torch.float16)
    rows = [{"input_ids": list(range(3 + i, 67 + i)), "attention_mask": [1] * 64}
            for i in range(16)]
    packed = []
    for fast in (False, True):
        qcfg = QuantizeConfig(bits=4, group_size=32, sym=False, desc_act=False,
                              damp_percent=0.01, act_group_aware=True)
        qcfg.offload_to_disk, qcfg.pack_impl = False, "gpu"
        if fast:
            qcfg.calibration_data_device = "cuda:0"
        m = GPTQModel.load(str(model_dir), qcfg, device="cuda", dtype=torch.float16)
        with fast_layer_loop(fast):
            m.quantize(rows, batch_size=4, backend=BACKEND.GPTQ_TORCH, calibration_sort=None)
        packed.append({k: v.cpu() for k, v in m.model.state_dict().items()
                       if k.rsplit(".", 1)[-1] in ("qweight", "qzeros", "scales", "g_idx")})
    assert packed[0] and packed[0].keys() == packed[1].keys()
    assert all(torch.equal(packed[0][k], packed[1][k]) for k in packed[0])


@pytest.mark.parametrize("device,profile,on", [("cuda", "h100_80gb", True),
                                               ("cuda", "t4_16gb", False),
                                               ("cpu", "h100_80gb", False)])
def test_adapter_takes_the_fast_loop_from_the_profile_on_cuda_only(monkeypatch, device, profile,
                                                                    on):
    """The adapter's speed settings: the profile's fast_layer_loop and tensor_core_hessian apply
    on CUDA only (a CPU run keeps gptqmodel's path whatever the profile says)."""
    from pathlib import Path

    from conftest import compose

    from qrecipe.backends.base import QuantizeRequest
    from qrecipe.backends.gptqmodel import adapter as gb
    cfg = compose(["+recipe=smollm2_gptq_w4", f"hardware={profile}"])
    req = QuantizeRequest(model_dir=Path("m"), out_dir=Path("o"), method=cfg.method, bits=4,
                          group_size=64, device=device, dtype="bfloat16",
                          hardware=cfg.hardware)
    hw = gb._speed(req)
    assert (hw["fast_layer_loop"], hw["tensor_core_hessian"]) == (on, on)


@pytest.mark.parametrize("profile,user,on", [("h100_80gb", None, True), ("t4_16gb", None, False),
                                             ("h100_80gb", "1", False)])
def test_the_block_update_flag_is_set_only_while_the_job_quantizes(monkeypatch, profile, user,
                                                                   on):
    """Without allow_jit (t4_16gb) the job quantizes with GPTQMODEL_DISABLE_GPTQ_CUDA=1, and the
    process's environment is as before once it is done: the flag once stayed set, and the next
    job of the process (a sweep's, the GPU tests') ran GPTQ without its block update though its
    profile allowed it. A value the user set wins and stays."""
    import os
    from pathlib import Path

    from conftest import compose

    from qrecipe.backends.base import QuantizeRequest
    from qrecipe.backends.gptqmodel import adapter as gb
    key = gb.NO_BLOCK_UPDATE
    if user is None:
        monkeypatch.delenv(key, raising=False)
    else:
        monkeypatch.setenv(key, user)
    cfg = compose(["+recipe=smollm2_gptq_w4", f"hardware={profile}"])
    req = QuantizeRequest(model_dir=Path("m"), out_dir=Path("o"), method=cfg.method, bits=4,
                          group_size=64, device="cuda", dtype="bfloat16",
                          hardware=cfg.hardware)
    hw = gb._speed(req)
    assert hw["block_update"] is on and os.environ.get(key) == user
    with gb._block_update(hw["block_update"]):
        assert (os.environ.get(key) != "1") is on
    assert os.environ.get(key) == user
