"""GPU path (issue 9): each backend quantizes -> saves -> reloads with a named kernel -> generates,
on a small random Llama, through qrecipe's runner. Marked `gpu`; skipped without CUDA.

The tokenizer comes from SmolLM2's GGUF (as tests/conftest.py's tiny model), or from the folder
named by QRECIPE_TEST_TOKENIZER where that package is not installed (the GPU machine)."""
from __future__ import annotations

import json

import pytest
from conftest import compose, make_random_llama

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def gpu_model_dir(tmp_path_factory):
    """2 decoder layers, hidden 256, intermediate 512: every width a multiple of 128 (the
    GPU kernels' tiles), small enough to quantize in seconds. Never for quality claims."""
    return make_random_llama(tmp_path_factory.mktemp("gpu_llama"), 256, 512, torch.float16)


CASES = [  # method, backend, bits, kernel, class name expected in the reloaded model
    ("gptq", "gptqmodel", "w4", "torch", "TorchLinear"),
    ("gptq", "gptqmodel", "w4", "triton", "TritonV2Linear"),
    ("rtn", "gptqmodel", "w4", "auto", "TorchLinear"),
    ("awq", "gptqmodel", "w4", "torch", "AwqTorchLinear"),
    ("awq", "gptqmodel", "w4", "triton", "AwqGEMMTritonLinear"),
    ("gptq", "llmcompressor", "w4", "compressed", "compressed-tensors"),
    ("gptq", "llmcompressor", "w4", "dequantized", None),
    ("awq", "llmcompressor", "w4", "compressed", "compressed-tensors"),
    # compressed-tensors rewritten into the GPTQ layout at reload (qrecipe/kernels/ct_gptq.py)
    ("gptq", "llmcompressor", "w4", "torch", "TorchLinear"),
    ("awq", "llmcompressor", "w4", "triton", "TritonV2Linear"),
    ("bnb", "bitsandbytes", "w4", "auto", "Linear4bit"),
    ("bnb", "bitsandbytes", "w8", "auto", "Linear8bitLt"),
]


@pytest.mark.parametrize("method,backend,bits,kernel,cls", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in CASES])
def test_quantize_reload_generate(gpu_model_dir, tmp_path, method, backend, bits, kernel, cls):
    from qrecipe.inputs import models
    from qrecipe.kernels.table import loaded_kernels
    from qrecipe.run.runner import run_job

    cfg = compose([f"method={method}", f"method.backend={backend}", f"bits={bits}",
                   "bits.group_size=128", "model=local", f"model.path={gpu_model_dir}",
                   "calibration=local", "calibration.num_samples=16", "calibration.seq_len=128",
                   "hardware=h100_80gb", "hardware.dtype=float16", f"hardware.kernel={kernel}",
                   "hardware.assign_gpus=false", "hardware.allow_jit=false",
                   "eval.max_windows=2", "eval.seq_len=128", "eval.stride=128",
                   "eval.baseline=false", "eval.speed=true", "eval.speed_prompt_len=16",
                   "eval.speed_new_tokens=8"])
    out = tmp_path / "run"
    assert run_job(cfg, out) == "ok", (out / "error.json").read_text()
    m = json.loads((out / "metrics.json").read_text())
    assert m["kernel"]["requested"] == kernel
    loaded = m["kernel"]["loaded_modules"]
    if cls:
        assert any(cls in name for name in loaded), loaded
        assert sum(loaded.values()) == 2 * 7  # every decoder Linear, never lm_head
    assert m["eval"]["quantized"]["speed"]["decode_tokens_per_s"] > 0
    assert m["eval"]["quantized"]["ppl"] == m["eval"]["quantized"]["ppl"]  # not NaN

    # a user's reload, as the report's snippet says, then generation
    model = models.load_causal_lm(out / "model", "auto", "cuda", kernel=kernel)
    assert model.qrecipe_kernel == m["kernel"]["resolved"]
    assert loaded_kernels(model) == loaded
    ids = torch.tensor([[1, 2, 3, 4]], device="cuda")
    gen = model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                         pad_token_id=0)
    assert gen.shape == (1, 12)
    report = (out / "report.md").read_text()
    assert "## Load it" in report


def test_jit_kernel_refused_without_allow_jit(gpu_model_dir, tmp_path, capsys):
    from qrecipe.run.runner import run_job
    cfg = compose(["method=gptq", "model=local", f"model.path={gpu_model_dir}",
                   "hardware=h100_80gb", "hardware.kernel=marlin", "hardware.assign_gpus=false",
                   "hardware.allow_jit=false"])
    assert run_job(cfg, tmp_path / "run", keep_failed_dir=False) == "user_error"
    err = capsys.readouterr().err
    assert "hardware.kernel='marlin': kernel marlin is compiled with nvcc" in err
    assert not (tmp_path / "run").exists()


def _asymmetric_gptq_with_jit(gpu_model_dir, tmp_path, backend, kernel="exllama_v2"):
    """A GPTQ w4 g128 job with zero points (sym false), h100_80gb (allow_jit on), eval with
    `kernel`: its output dir and metrics."""
    from qrecipe.run.runner import run_job
    cfg = compose(["method=gptq", f"method.backend={backend}", "method.sym=false", "bits=w4",
                   "bits.group_size=128", "model=local", f"model.path={gpu_model_dir}",
                   "calibration=local", "calibration.num_samples=16", "calibration.seq_len=128",
                   "hardware=h100_80gb", "hardware.dtype=float16", "hardware.assign_gpus=false",
                   f"hardware.kernel={kernel}",
                   f"cache.dir={tmp_path / 'cache'}", "eval.max_windows=2", "eval.seq_len=128",
                   "eval.stride=128", "eval.baseline=false", "eval.speed=true",
                   "eval.speed_prompt_len=16", "eval.speed_new_tokens=8"])
    out = tmp_path / "run"
    assert run_job(cfg, out) == "ok", (out / "error.json").read_text()
    return out, json.loads((out / "metrics.json").read_text())


def test_asymmetric_gptq_reloads_with_exllama_when_jit_is_allowed(gpu_model_dir, tmp_path):
    """qrecipe's GPTQ default has zero points, which gptqmodel's GPTQ Marlin refuses (a
    ValueError at reload, measured on the H100); ExLlamaV2 takes them. Its kernels launch on the
    legacy default stream, outside a captured CUDA graph: the speed step checks one replayed
    step against the eager one and reports the eager decode, with the reason."""
    out, m = _asymmetric_gptq_with_jit(gpu_model_dir, tmp_path, "gptqmodel")
    assert m["kernel"]["resolved"] == "exllama_v2"
    assert any("ExllamaV2" in name for name in m["kernel"]["loaded_modules"])
    sp = m["eval"]["quantized"]["speed"]
    assert sp["decode_path"] == "eager" and "outside the capture" in sp["graph_error"], sp
    assert sp["decode_tokens_per_s"] > 0
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


def test_graph_decode_is_the_eager_decode_where_it_is_used(gpu_model_dir, tmp_path):
    """gptqmodel's torch kernel runs inside the captured graph: the graph path is used, and
    the process's current stream is the default one after every measurement."""
    out, m = _asymmetric_gptq_with_jit(gpu_model_dir, tmp_path, "gptqmodel", kernel="torch")
    sp = m["eval"]["quantized"]["speed"]
    assert sp["decode_path"] == "graph" and "graph_error" not in sp, sp
    from qrecipe.evaluation.speed import EAGER_SIDE_STEPS
    assert sp["eager_new_tokens"] == min(EAGER_SIDE_STEPS, sp["new_tokens"]), sp  # a side note
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


def test_asymmetric_gptq_on_awq_marlin_gives_the_torch_kernels_logits(gpu_model_dir, tmp_path):
    """qrecipe's GPTQ default (zero points) on AWQ Marlin: rewritten into the AWQ layout at load
    (kernels/gptq_awq.py), decoded inside a captured graph, its logits against the same
    checkpoint on gptqmodel's torch kernel. The compressed-tensors checkpoint of the same model
    takes the same route."""
    from qrecipe.inputs import models
    out, m = _asymmetric_gptq_with_jit(gpu_model_dir, tmp_path, "gptqmodel", kernel="awq_marlin")
    assert m["kernel"]["resolved"] == "awq_marlin"
    assert m["kernel"]["loaded_modules"] == {"AwqMarlinLinear": 14}
    sp = m["eval"]["quantized"]["speed"]
    assert sp["decode_path"] == "graph" and "graph_error" not in sp, sp
    assert 'kernel="awq_marlin", allow_jit=True)' in (out / "report.md").read_text()
    fast = models.load_causal_lm(out / "model", "float16", "cuda", kernel="awq_marlin",
                                 allow_jit=True)
    ref = models.load_causal_lm(out / "model", "float16", "cuda", kernel="torch")
    for n in (16, 64):
        ids = torch.arange(1, n + 1, device="cuda").unsqueeze(0)
        with torch.no_grad():
            a, b = fast(ids).logits.float(), ref(ids).logits.float()
        assert (a - b).abs().max() < 0.02 * b.abs().max(), (n, float((a - b).abs().max()))
    (tmp_path / "ct").mkdir()
    _, mc = _asymmetric_gptq_with_jit(gpu_model_dir, tmp_path / "ct", "llmcompressor",
                                      kernel="awq_marlin")
    assert mc["kernel"]["loaded_modules"] == {"AwqMarlinLinear": 14}


def test_compressed_tensors_on_exllama_gives_the_dense_logits(gpu_model_dir, tmp_path):
    """llm-compressor's checkpoint (asymmetric GPTQ) on ExLlamaV2 (allow_jit): rewritten into
    the GPTQ layout; its logits against the same checkpoint dequantized to dense fp16 (what
    transformers alone gives)."""
    from qrecipe.inputs import models
    out, m = _asymmetric_gptq_with_jit(gpu_model_dir, tmp_path, "llmcompressor")
    assert m["kernel"]["resolved"] == "exllama_v2"
    assert m["kernel"]["loaded_modules"] == {"ExllamaV2Linear": 14}
    assert 'kernel="exllama_v2", allow_jit=True)' in (out / "report.md").read_text()
    fast = models.load_causal_lm(out / "model", "auto", "cuda", kernel="exllama_v2",
                                 allow_jit=True)
    dense = models.load_causal_lm(out / "model", "auto", "cuda", kernel="dequantized")
    exact = models.load_causal_lm(out / "model", "float32", "cuda", kernel="dequantized")
    # 16 tokens: ExLlamaV2's own GEMM; 64 (over its 50 rows): the weights dequantized, then
    # cuBLAS's half-precision GEMM. Each against the float32 dequantized model, beside the dense
    # fp16 model's own distance from it: a failure says which path and what the process did.
    seen = {}
    for n in (16, 64):
        ids = torch.arange(1, n + 1, device="cuda").unsqueeze(0)
        with torch.no_grad():
            a, b, c = (m(ids).logits.float() for m in (fast, dense, exact))
        seen[n] = {"exllama-dense": float((a - b).abs().max()), "dense max": float(b.abs().max()),
                   "exllama-fp32": float((a - c).abs().max()),
                   "dense-fp32": float((b - c).abs().max())}
    digest = _weights_digest(out / "model")
    for n, d in seen.items():
        assert d["exllama-dense"] < 0.02 * d["dense max"], (n, seen, digest)


def _weights_digest(model_dir) -> str:
    import hashlib
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def test_llmcompressor_placement_on_the_gpu_changes_no_byte(gpu_model_dir, tmp_path):
    """h100_80gb loads the whole model onto the GPU and keeps the activations between layers
    there (backends/llmcompressor/placement.py): only copies move, so the weights saved are the
    ones of llm-compressor's defaults (CPU RAM for both), byte for byte."""
    import hashlib

    from qrecipe.run.runner import run_job

    def job(name, *extra):
        cfg = compose(["method=awq", "method.backend=llmcompressor", "bits=w4",
                       "bits.group_size=128", "model=local", f"model.path={gpu_model_dir}",
                       "calibration=local", "calibration.num_samples=16",
                       "calibration.seq_len=128", "hardware=h100_80gb",
                       "hardware.assign_gpus=false", "eval=none", *extra])
        out = tmp_path / name
        assert run_job(cfg, out) == "ok", (out / "error.json").read_text()
        details = json.loads((out / "metrics.json").read_text())["quantize_details"]
        digests = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                   for f in sorted((out / "model").glob("*.safetensors"))}
        return details, digests

    resident, a = job("resident")
    streamed, b = job("streamed", "hardware.model_on_gpu=false",
                      "hardware.stream_activations=true")
    assert resident["model_loaded_on"]["device"] == "cuda"
    assert resident["activations_between_layers"] == "cuda"
    assert streamed["model_loaded_on"]["device"] == "cpu"
    assert streamed["activations_between_layers"] == "cpu"
    assert a and a == b
