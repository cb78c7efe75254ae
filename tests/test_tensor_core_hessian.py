"""hardware.tensor_core_hessian (qrecipe/backends/gptqmodel/hessian.py): GPTQ's Hessians as one
tensor-core GEMM of the fp16/bf16 activations with float32 output. On the CPU the setting must
leave gptqmodel's own path (and its numbers) untouched; on a GPU the two paths must agree.
Which profiles turn it (and hardware.fast_layer_loop) on is checked here too."""
from __future__ import annotations

import pytest
from conftest import compose

torch = pytest.importorskip("torch")
pytest.importorskip("gptqmodel")


def _gptq(hessian_chunk=None):
    """A gptqmodel GPTQ task on a small Linear, as its processor builds one."""
    from gptqmodel import QuantizeConfig
    from gptqmodel.quantization.gptq import GPTQ
    q = QuantizeConfig(bits=4, group_size=128)
    if hessian_chunk:
        q.hessian.chunk_size = hessian_chunk
    return GPTQ(torch.nn.Linear(256, 64, bias=False), qcfg=q)


@pytest.mark.parametrize("profile,on", [("cpu", False), ("h100_80gb", True),
                                        ("a100_80gb", True), ("rtx4090_24gb", False),
                                        ("t4_16gb", False), ("gpu_24gb", False)])
def test_profiles_turn_the_gpu_speed_settings_on_where_measured(profile, on):
    """The 80 GB profiles, whose settings were measured on an H200 (docs/benchmarks.md, "GPU:
    tensor-core Hessians on a real checkpoint": SmolLM2's perplexity with tensor-core Hessians within 1%, the fast loop's
    bytes identical); the small-memory profiles keep the layer inputs off the GPU. A user's
    override wins either way."""
    hw = compose(["+recipe=smollm2_gptq_w4", f"hardware={profile}"]).hardware
    assert (hw.tensor_core_hessian, hw.fast_layer_loop) == (on, on)
    hw = compose(["+recipe=smollm2_gptq_w4", f"hardware={profile}",
                  f"hardware.tensor_core_hessian={not on}", f"hardware.fast_layer_loop={not on}"]
                 ).hardware
    assert (hw.tensor_core_hessian, hw.fast_layer_loop) == (not on, not on)


def test_cpu_activations_keep_gptqmodels_path():
    """fast_xtx_applies is false on the CPU, and with the setting on, the patched method gives
    exactly gptqmodel's float32 result (the CPU has no tensor-core path to take)."""
    from qrecipe.backends.gptqmodel import hessian as gh
    task = _gptq()
    x = torch.randn(96, 256).to(torch.bfloat16)
    assert not gh.fast_xtx_applies(x, task.qcfg)
    from gptqmodel.quantization.gptq import GPTQ
    upstream = GPTQ.compute_hessian_xtx
    before = task.compute_hessian_xtx(x)
    with gh.tensor_core_hessian(True) as applied:
        assert applied and GPTQ.compute_hessian_xtx is not upstream
        during = task.compute_hessian_xtx(x)
    assert GPTQ.compute_hessian_xtx is upstream  # gptqmodel's own once the call is over
    assert torch.equal(before, during)
    assert during.dtype == torch.float32


def test_off_leaves_gptqmodel_alone_and_chunked_accumulation_too():
    from gptqmodel.quantization.gptq import GPTQ

    from qrecipe.backends.gptqmodel import hessian as gh
    upstream = GPTQ.compute_hessian_xtx
    with gh.tensor_core_hessian(False) as applied:
        assert not applied and GPTQ.compute_hessian_xtx is upstream
    x = torch.randn(8, 256).to(torch.bfloat16)
    assert not gh.fast_xtx_applies(x, _gptq(hessian_chunk=4).qcfg)  # a user's chunking wins


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tensor_core_hessian_matches_float32_on_gpu(dtype):
    """The same products, less exact sums: measured max |error| / max |H| ~3.7e-4 on an H200
    at 65536 rows (docs/benchmarks.md), against ~1e-5 for float32; the bound leaves room."""
    from qrecipe.backends.gptqmodel import hessian as gh
    task = _gptq()
    x = (torch.randn(4096, 256, device="cuda") * 2).to(dtype)
    ref = x.double().T @ x.double()
    assert gh.fast_xtx_applies(x, task.qcfg)
    with gh.tensor_core_hessian(True):
        h = task.compute_hessian_xtx(x)
    assert h.dtype == torch.float32
    assert ((h.double() - ref).abs().max() / ref.abs().max()).item() < 2e-3
