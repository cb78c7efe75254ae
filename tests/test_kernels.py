"""Kernel resolution (qrecipe/kernels/table.py): a pure function of format, device, compute capability
and allow_jit; no torch, no GPU. These tests pin the table's own order (what `auto` does where
nothing is measured): the measured table is emptied for each; the last tests use the shipped one
(tests/test_kernels_measured.py covers the ranking itself)."""
import sys

import pytest

from qrecipe.errors import QRecipeError
from qrecipe.kernels import measured
from qrecipe.kernels import table as kernels


@pytest.fixture(autouse=True)
def unmeasured(request, monkeypatch):
    if "shipped_measurements" not in request.keywords:
        monkeypatch.setattr(measured, "table", lambda: {"sources": [], "rows": []})


@pytest.mark.parametrize("fmt,cuda,cpu", [("gptq", "torch", "torch_aten"),
                                          ("awq", "torch", "dequantized"),
                                          ("compressed-tensors", "compressed", "compressed"),
                                          ("bitsandbytes", "bitsandbytes", "bitsandbytes")])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_auto_needs_no_build_or_download(fmt, cuda, cpu, device):
    k = kernels.resolve(fmt, device, "auto", allow_jit=False, cc=9.0, fast_bf16=True)
    assert k.name == (cpu if device == "cpu" else cuda)
    assert not k.jit and not k.download


def test_auto_on_cpu_takes_the_fastest_kernel_that_fits():
    """CPU (benchmarks/cpu_kernels.py): with fast bfloat16, PyTorch's int4 kernel for 4-bit groups
    of 16..128 and the dense weights otherwise; without (an AVX2-only CPU, a float32 job), the
    dense weights; never gptqmodel's torch kernel, which decodes ~14x slower."""
    def auto(fast=True, **kw):
        return kernels.resolve("gptq", "cpu", "auto", sym=False, fast_bf16=fast, **kw).name
    assert auto(bits=4, group_size=64) == "torch_aten"
    assert auto(bits=4, group_size=256) == "dequantized"
    assert auto(bits=3, group_size=64) == "dequantized"
    assert auto(bits=8, group_size=-1) == "dequantized"
    assert auto(False, bits=4, group_size=64) == "dequantized"
    assert kernels.resolve("awq", "cpu", "auto", fast_bf16=False).name == "dequantized"
    # asked by name: the int4 kernel does not run other widths; none of them runs on CUDA
    with pytest.raises(QRecipeError, match="runs 4-bit weights only"):
        kernels.resolve("gptq", "cpu", "torch_aten", bits=8)
    for name in ("torch_aten", "torch_int8", "dequantized"):
        with pytest.raises(QRecipeError, match="does not run on cuda"):
            kernels.resolve("gptq", "cuda", name)
    assert kernels.get("gptq", "torch").slower and kernels.get("gptq", "dequantized").slower


def test_auto_with_jit_picks_marlin_on_ampere_and_newer_only():
    assert kernels.resolve("gptq", "cuda", "auto", allow_jit=True, cc=9.0).name == "marlin"
    assert kernels.resolve("awq", "cuda", "auto", allow_jit=True, cc=8.0).name == "marlin"
    # Turing (T4) has no Marlin: falls back to the no-build kernel
    assert kernels.resolve("gptq", "cuda", "auto", allow_jit=True, cc=7.5).name == "torch"
    # never a compiled kernel on CPU
    assert not kernels.resolve("gptq", "cpu", "auto", allow_jit=True).jit


def test_asymmetric_gptq_never_gets_marlin():
    # gptqmodel's GPTQ Marlin refuses zero points (measured on the H100: ValueError at reload);
    # qrecipe's GPTQ default is asymmetric, so auto picks ExLlamaV2 there, and AWQ Marlin
    # (which takes zero points) stays.
    assert kernels.resolve("gptq", "cuda", "auto", allow_jit=True, cc=9.0,
                           sym=False).name == "exllama_v2"
    assert kernels.resolve("gptq", "cuda", "auto", allow_jit=True, cc=9.0,
                           sym=True).name == "marlin"
    assert kernels.resolve("awq", "cuda", "auto", allow_jit=True, cc=9.0,
                           sym=False).name == "marlin"
    assert kernels.resolve("gptq", "cuda", "auto", allow_jit=False, cc=9.0,
                           sym=False).name == "torch"
    with pytest.raises(QRecipeError) as e:
        kernels.resolve("gptq", "cuda", "marlin", allow_jit=True, cc=9.0, sym=False)
    assert "symmetric checkpoints only" in str(e.value) and "exllama_v2" in str(e.value)


def test_jit_kernel_refused_without_allow_jit():
    with pytest.raises(QRecipeError) as e:
        kernels.resolve("gptq", "cuda", "marlin", allow_jit=False, cc=9.0)
    msg = str(e.value)
    assert msg.startswith("hardware.kernel='marlin': kernel marlin is compiled with nvcc")
    assert "allowed: auto, torch, triton" in msg and "allow_jit=true" in msg
    with pytest.raises(QRecipeError, match="downloads CUTLASS"):
        kernels.resolve("gptq", "cuda", "machete", allow_jit=False, cc=9.0)
    assert kernels.resolve("gptq", "cuda", "marlin", allow_jit=True, cc=9.0).hf_backend == "marlin"


def test_unknown_or_misplaced_kernel():
    with pytest.raises(QRecipeError, match="unknown kernel for awq"):
        kernels.resolve("awq", "cuda", "exllama_v2", allow_jit=True)
    with pytest.raises(QRecipeError, match="does not run on cpu"):
        kernels.resolve("gptq", "cpu", "triton")
    with pytest.raises(QRecipeError, match="compute capability >= 9.0"):
        kernels.resolve("gptq", "cuda", "machete", allow_jit=True, cc=8.0)
    with pytest.raises(QRecipeError, match="does not run in bfloat16"):
        kernels.resolve("awq", "cuda", "triton", dtype="bfloat16")
    with pytest.raises(QRecipeError, match="unknown kernel"):
        kernels.check("fastest", allow_jit=True)
    with pytest.raises(QRecipeError, match="compiled with nvcc"):
        kernels.check("machete", allow_jit=False)
    kernels.check("triton", allow_jit=False)  # no error


def test_hf_backend_names_are_transformers_values():
    # The strings transformers' configs accept (AwqBackend values; GPTQConfig lower-cases).
    assert [k.hf_backend for k in kernels.KERNELS["awq"]] == [
        "torch_awq", "gemm_triton", "marlin", "gemm", "torch_awq"]
    assert [k.hf_backend for k in kernels.KERNELS["gptq"]] == [
        "torch", "triton", "marlin", "exllama_v2", "machete", "gptq_torch_aten", "torch_int8",
        "torch", "marlin"]  # the last: awq_marlin, AwqConfig's value (the AWQ layout loads)
    assert kernels.loads_as("gptq", kernels.get("gptq", "awq_marlin"))[0] == "awq"
    from gptqmodel.utils.backend import normalize_backend
    for k in kernels.KERNELS["gptq"]:
        assert normalize_backend(k.hf_backend, quant_method="gptq") is not None


def test_capability_formats_and_snippet():
    from qrecipe.backends.capabilities import CAPABILITIES
    assert CAPABILITIES["gptqmodel"]["awq"].format == "awq"
    assert CAPABILITIES["gptqmodel"]["rtn"].format == "gptq"
    assert CAPABILITIES["llmcompressor"]["gptq"].format == "compressed-tensors"
    from qrecipe.kernels.hf_config import load_lines
    lines = load_lines("gptq", kernels.get("gptq", "torch"), 4)
    assert lines[-1] == ('model = AutoModelForCausalLM.from_pretrained("model", quantization_'
                         'config=GPTQConfig(bits=4, backend="torch"), device_map="auto")')
    ct = load_lines("compressed-tensors", kernels.get("compressed-tensors", "exllama_v2"), 4)
    assert ct[-1] == 'model = load_causal_lm("model", "auto", "cuda", kernel="exllama_v2", ' \
                     'allow_jit=True)'


def test_jit_cache_goes_into_qrecipe_cache(tmp_path, monkeypatch):
    for k in ("GPTQMODEL_TORCH_EXTENSIONS_DIR", "GPTQMODEL_CACHE_DIR", "GPTQMODEL_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    env = kernels.configure_jit_cache(tmp_path)
    assert env["GPTQMODEL_TORCH_EXTENSIONS_DIR"].startswith(str(tmp_path / "kernels"))
    assert env["GPTQMODEL_OFFLINE"] == "1"


def test_module_imports_no_torch():
    import subprocess
    code = "import qrecipe.kernels.table, qrecipe.kernels.hf_config, qrecipe.kernels.ct_gptq, " \
        "qrecipe.kernels.dense, qrecipe.kernels.cpu, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_kernel_refuses_widths_it_does_not_run():
    """ExLlamaV2 runs 4-bit only (gptqmodel's SUPPORTS_BITS): a w8 GPTQ checkpoint under `auto`
    with allow_jit gets Marlin when symmetric, the torch kernel when not; asked by name, it stops
    with the widths allowed."""
    assert kernels.resolve("gptq", "cuda", "auto", True, cc=9.0, sym=False, bits=8).name == \
        "torch"
    assert kernels.resolve("gptq", "cuda", "auto", True, cc=9.0, sym=True, bits=8).name == \
        "marlin"
    with pytest.raises(QRecipeError, match="runs 4-bit weights only"):
        kernels.resolve("gptq", "cuda", "exllama_v2", True, cc=9.0, bits=8)
    assert kernels.saved_facts("gptq", {"bits": 8, "sym": True, "group_size": 128}) == \
        {"sym": True, "bits": 8, "group_size": 128, "convertible": True}  # no act-order
    # ExLlamaV2 and Marlin take groups of -1/32/64/128 (SUPPORTS_GROUP_SIZE): g256 under auto
    # keeps the torch kernel, and a request by name stops at validation time
    assert kernels.resolve("gptq", "cuda", "auto", True, cc=9.0, sym=False, bits=4,
                           group_size=256).name == "torch"
    with pytest.raises(QRecipeError, match="takes group sizes -1, 32, 64, 128 only"):
        kernels.resolve("compressed-tensors", "cuda", "exllama_v2", True, cc=9.0, bits=4,
                        group_size=256)
    # a compressed-tensors width the rewrite does not take stops on the `via` torch kernel too
    with pytest.raises(QRecipeError, match="runs 2/4/8-bit weights only"):
        kernels.resolve("compressed-tensors", "cpu", "torch", bits=3)
    assert kernels.saved_facts("compressed-tensors", {"config_groups": {}}) == \
        {"convertible": False}
    # a scheme that cannot be rewritten keeps compressed-tensors' own kernel under auto
    assert kernels.resolve("compressed-tensors", "cuda", "auto", True, cc=9.0,
                           convertible=False).name == "compressed"


@pytest.mark.parametrize("method,dtype", [("rtn", "float32"), ("rtn", "bfloat16"),
                                          ("awq", "bfloat16")])
def test_dequantized_kernel_gives_the_torch_kernels_logits(method, dtype, tiny_model_dir,
                                                          tmp_path):
    """kernels/dense.py: the dense weights are the ones the torch kernel (GPTQ's, AWQ's) computes
    per forward, multiplied the same way: the same logits to the bit, no quantized layer left."""
    import torch
    from conftest import compose

    from qrecipe.inputs.models import load_causal_lm
    from qrecipe.kernels.hf_config import finish_load, load_lines
    from qrecipe.kernels.table import loaded_kernels
    from qrecipe.run.runner import run_job
    # gptqmodel: the GPTQ and AWQ formats these kernels read (AWQ's default writes
    # compressed-tensors)
    cfg = compose([f"method={method}", "method.backend=gptqmodel", "model=local",
                   f"model.path={tiny_model_dir}",
                   "bits.group_size=32", "eval=none", "calibration.num_samples=4",
                   "calibration.seq_len=32"])
    assert run_job(cfg, tmp_path / "run") == "ok"
    ids = torch.randint(0, 1000, (1, 48))
    logits = {}
    for name in ("torch", "dequantized"):
        model = load_causal_lm(tmp_path / "run" / "model", dtype, kernel=name)
        finish_load(model)
        with torch.inference_mode():
            logits[name] = model(ids).logits
        counts = loaded_kernels(model)
        assert (counts == {"Linear[dequantized]": 14}) is (name == "dequantized"), counts
    assert logits["torch"].dtype == getattr(torch, dtype)
    assert torch.equal(logits["torch"], logits["dequantized"])
    fmt = "awq" if method == "awq" else "gptq"
    assert load_lines(fmt, kernels.get(fmt, "dequantized"), 4)[-1].startswith(
        "dequantize_linears(model)")


def test_fp8_checkpoints_take_the_fp8_matmul_on_ada_or_hopper_only():
    """transformers' FP8 layers (use_optimized_inference) for FP8 weights where the GPU has FP8
    tensor cores (cc >= 8.9); emulation below that and on CPU; never for int checkpoints."""
    from qrecipe.kernels import hf_config
    from qrecipe.kernels import table as t
    fp8 = {"format": "float-quantized", "config_groups": {"group_0": {
        "weights": {"type": "float", "num_bits": 8, "strategy": "channel"},
        "input_activations": {"type": "float", "num_bits": 8, "dynamic": True}}}}
    w8a8 = {"format": "int-quantized", "config_groups": {"group_0": {
        "weights": {"type": "int", "num_bits": 8}, "input_activations": {"type": "int",
                                                                         "num_bits": 8}}}}
    f, g = t.saved_facts("compressed-tensors", fp8), t.saved_facts("compressed-tensors", w8a8)
    assert t.resolve("compressed-tensors", "cuda", "auto", cc=9.0, **f).name == "fp8"
    assert t.resolve("compressed-tensors", "cuda", "auto", cc=8.0, **f).name == "emulated"
    assert t.resolve("compressed-tensors", "cpu", "auto", **f).name == "emulated"
    assert t.resolve("compressed-tensors", "cuda", "auto", cc=9.0, **g).name == "emulated"
    with pytest.raises(QRecipeError, match="runs FP8-weight checkpoints only"):
        t.resolve("compressed-tensors", "cuda", "fp8", cc=9.0, **g)
    with pytest.raises(QRecipeError, match=r"needs compute capability >= 8.9 \(this GPU: 8.0\)"):
        t.resolve("compressed-tensors", "cuda", "fp8", cc=8.0, **f)
    k = t.get("compressed-tensors", "fp8")
    assert hf_config.quantization_config("compressed-tensors", k, fp8).use_optimized_inference
    assert "use_optimized_inference=True" in "\n".join(
        hf_config.load_lines("compressed-tensors", k, 8))


@pytest.mark.shipped_measurements
def test_shipped_measurements_pick_marlin_for_symmetric_gptq_on_an_h100_and_leave_fp8_alone():
    """kernels/measured.json (32-layer Llama-2-7B shape, H100, float16): Marlin 1.52x fp16 at
    batch 1 on symmetric GPTQ (AWQ Marlin on the rewritten layout: 1.47x); asymmetric GPTQ (no
    GPTQ Marlin) AWQ Marlin (1.47x) over the torch kernel (0.45x), and the torch kernel without
    a build; ExLlamaV2's graph figures were invalid and left out; AWQ's fastest is Marlin
    (1.48x)."""
    assert kernels.resolve("gptq", "cuda", "auto", allow_jit=True, cc=9.0, sym=True, bits=4,
                           group_size=128).name == "marlin"
    assert kernels.resolve("gptq", "cuda", "auto", allow_jit=True, cc=9.0, sym=False, bits=4,
                           group_size=128).name == "awq_marlin"
    assert kernels.resolve("gptq", "cuda", "auto", allow_jit=False, cc=9.0, sym=False, bits=4,
                           group_size=128).name == "torch"
    assert kernels.resolve("awq", "cuda", "auto", allow_jit=True, cc=9.0, bits=4,
                           group_size=128).name == "marlin"
    # AWQ without a build: Triton (0.74x) over the torch kernel (0.03x), but float16 only
    assert kernels.resolve("awq", "cuda", "auto", cc=9.0, bits=4, group_size=128,
                           dtype="float16").name == "triton"
    assert kernels.resolve("awq", "cuda", "auto", cc=9.0, bits=4, group_size=128,
                           dtype="bfloat16").name == "torch"
    fp8 = {"format": "float-quantized", "config_groups": {"group_0": {
        "weights": {"type": "float", "num_bits": 8},
        "input_activations": {"type": "float", "num_bits": 8, "dynamic": True}}}}
    f = kernels.saved_facts("compressed-tensors", fp8)
    assert kernels.resolve("compressed-tensors", "cuda", "auto", cc=9.0, **f).name == "fp8"
    # 8-bit GPTQ: the 4-bit figures do not rank it (the table's order)
    assert kernels.resolve("gptq", "cuda", "auto", allow_jit=True, cc=9.0, sym=True, bits=8,
                           group_size=128).name == "marlin"
