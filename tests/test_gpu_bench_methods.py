"""The GPU benchmark's newer methods (fp8, w8a8, autoround, hqq, nvfp4, mxfp4), without a GPU:
which jobs --only picks, the checkpoint kinds and reload kernels, qrecipe's job config per
method (composed and validated for the H100 profile), the library-default jobs' code paths on a
tiny model on CPU, and the tables."""
import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_bench
import gpu_bench_jobs
import gpu_bench_table

from qrecipe.backends.capabilities import CAPABILITIES
from qrecipe.kernels import table as kernels

NEW = ("fp8", "w8a8", "autoround", "hqq", "nvfp4", "mxfp4")
PAIRS = [(m, b) for m, b, r, _ in gpu_bench.NEW_JOBS if r == "qrecipe"]


def _labels(only):
    return [gpu_bench._label(*j[:3]) for j in gpu_bench.selected(argparse.Namespace(only=only))]


def test_only_selects_the_new_group_and_the_default_run_keeps_its_meaning():
    every = _labels(",".join(NEW) + ",speed")
    assert every == [gpu_bench._label(*j[:3]) for j in gpu_bench.NEW_JOBS]
    assert {m for m, _ in PAIRS} == set(NEW)
    for m, b in PAIRS:  # each method: qrecipe's job and its library's default
        assert f"{m}-{b}-qrecipe" in every and f"{m}-{b}-backend_default" in every
    # the reload of every qrecipe checkpoint comes after it was written
    assert max(every.index(f"{m}-{b}-qrecipe") for m, b in PAIRS) < every.index("speed")
    # no --only: the original set alone, nothing new
    assert gpu_bench.selected(argparse.Namespace(only="")) == [
        j for j in gpu_bench.JOBS if j[0] != "cold"]
    assert _labels("speed") == ["speed"]
    assert _labels("fp8") == ["fp8-llmcompressor-qrecipe", "fp8-llmcompressor-backend_default"]
    # old and new named together: the old jobs, then the new group with its one speed step
    mixed = _labels("gptq-gptqmodel,hqq,speed")
    assert mixed == ["gptq-gptqmodel-backend_default", "gptq-gptqmodel-qrecipe",
                     "hqq-hqq-qrecipe", "hqq-hqq-backend_default", "speed"]


def test_every_new_checkpoint_has_a_kind_whose_kernels_exist():
    for m, b in PAIRS:
        kind = gpu_bench.FORMAT[(m, b)]
        fmt = gpu_bench.fmt_of(kind)
        support = CAPABILITIES[b][m]
        assert fmt == support.format, (m, b)  # the format the capability table says it writes
        # the emulated kind is exactly the schemes with a layout of their own (float/int W8A8)
        assert (kind == gpu_bench.EMULATED) == bool(support.layout), (m, b)
        for k in gpu_bench.SPEED_KERNELS[kind]:
            assert k in kernels.names(fmt), (kind, k)
    assert gpu_bench.SPEED_KERNELS[gpu_bench.EMULATED] == ("emulated", "fp8")


def test_only_autoround_makes_the_speed_step_wait_for_builds():
    """The float / W8A8 / hqq checkpoints run on no compiled kernel; AutoRound's int4 does."""
    free = gpu_bench.selected(argparse.Namespace(only="fp8,w8a8,hqq,nvfp4,mxfp4,speed"))
    assert gpu_bench.speed_builds(free) == () and gpu_bench._builds(free) == ()
    ar = gpu_bench.selected(argparse.Namespace(only="autoround,speed"))
    assert set(gpu_bench._builds(ar)) == {"exllamav2", "marlin_fp16"}


def _seven_b(d: Path) -> Path:
    """A config.json of the 32-layer Llama-2-7B shape (what validation reads) beside a
    one-tensor safetensors file (validation checks that weights exist, not their shapes)."""
    import torch
    from safetensors.torch import save_file
    d.mkdir(parents=True, exist_ok=True)
    save_file({"lm_head.weight": torch.zeros(1, 1)}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 32, "vocab_size": 32000}))
    return d


@pytest.mark.parametrize("method,backend", PAIRS)
def test_the_qrecipe_job_of_each_method_composes_and_validates_for_the_h100(
        method, backend, tmp_path):
    from hydra import compose, initialize_config_dir

    from qrecipe.paths import config_dir
    from qrecipe.recipes import schema
    from qrecipe.run.validate import validate

    spec = {"method": method, "backend": backend, "model": str(_seven_b(tmp_path / "m")),
            "samples": 128, "seq_len": 512, "qcache": str(tmp_path / "q"), "name": "t"}
    schema.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose(config_name="config", overrides=gpu_bench_jobs.qrecipe_overrides(spec))
    plan = validate(cfg, here=False, hub=False)  # everything but the GPU itself
    assert plan.unchecked and cfg.hardware.device == "cuda" and cfg.hardware.dtype == "float16"
    want = {"fp8": 8, "w8a8": 8}.get(method, 4)
    assert (cfg.method.name, cfg.method.backend, cfg.bits.width) == (method, backend, want)
    if method != "fp8":  # FP8's scheme fixes its grouping
        assert cfg.bits.group_size == {"w8a8": -1, "hqq": 64, "nvfp4": 16,
                                       "mxfp4": 32}.get(method, 128)
    if method == "autoround":
        assert cfg.method.preset == gpu_bench_jobs.AUTOROUND_PRESET == "light"
    if method == "hqq":
        assert cfg.method.axis == 1  # run by hqq's torch kernel, qrecipe's on CUDA


def test_the_old_methods_keep_their_bits():
    spec = {"backend": "x", "model": "m", "samples": 1, "seq_len": 1, "qcache": "c", "name": "n"}
    for method, bits in (("gptq", "bits=w4"), ("awq", "bits=w4"), ("bnb8", "bits=w8")):
        ov = gpu_bench_jobs.qrecipe_overrides({**spec, "method": method})
        assert ov[-2:] == [bits, "bits.group_size=128"]


def test_the_library_recipes_read_data_where_qrecipe_s_schemes_do():
    """The default jobs' calibration use matches qrecipe's own (schemes.uses_rows)."""
    from conftest import compose

    from qrecipe.backends.llmcompressor import schemes
    names = {"fp8": ["QuantizationModifier"], "w8a8": ["SmoothQuantModifier", "GPTQModifier"],
             "autoround": ["AutoRoundModifier"], "nvfp4": ["QuantizationModifier"],
             "mxfp4": ["QuantizationModifier"]}
    for method, classes in names.items():
        recipe, uses_rows = gpu_bench_jobs.llmc_default_recipe(method)
        mods = recipe if isinstance(recipe, list) else [recipe]
        assert [type(x).__name__ for x in mods] == classes
        assert uses_rows == schemes.uses_rows(compose([f"method={method}"]).method), method
    ar = gpu_bench_jobs.llmc_default_recipe("autoround")[0]
    assert ar.iters == 50 and ar.enable_torch_compile  # light's iterations; its own compile


def _ct(fmt, weights, acts=None):
    return {"quant_method": "compressed-tensors", "format": fmt, "config_groups": {"group_0": {
        "format": fmt, "targets": ["Linear"], "weights": weights, "input_activations": acts}}}


_SAVED = {
    "fp8-llmc": _ct("float-quantized", {"num_bits": 8, "type": "float", "strategy": "channel"},
                    {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True}),
    "w8a8-llmc": _ct("int-quantized", {"num_bits": 8, "type": "int", "strategy": "channel",
                                       "symmetric": True},
                     {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True}),
    "nvfp4-llmc": _ct("nvfp4-pack-quantized", {"num_bits": 4, "type": "float",
                                               "strategy": "tensor_group", "group_size": 16},
                      {"num_bits": 4, "type": "float", "strategy": "tensor_group",
                       "group_size": 16, "dynamic": "local"}),
    "mxfp4-llmc": _ct("mxfp4-pack-quantized", {"num_bits": 4, "type": "float",
                                               "strategy": "group", "group_size": 32}),
    "autoround-llmc": _ct("pack-quantized", {"num_bits": 4, "type": "int", "strategy": "group",
                                             "group_size": 128, "symmetric": True}),
    "hqq": {"quant_method": "hqq", "quant_config": {"weight_quant_params": {
        "nbits": 4, "group_size": 64, "axis": 1}}},
}


def _ckpts(tmp_path):
    out = []
    for label, saved in _SAVED.items():
        d = tmp_path / label
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"quantization_config": saved}))
        method = label.split("-")[0]
        out.append((label, gpu_bench.FORMAT[(method, "hqq" if method == "hqq" else
                                              "llmcompressor")], str(d)))
    return out


def test_the_new_checkpoints_reload_with_qrecipe_s_kernel_then_the_fp8_one(tmp_path):
    ckpts = _ckpts(tmp_path)
    t = [(m, k) for m, k, _ in gpu_bench.speed_targets(ckpts, tmp_path / "fp16", cc=9.0)]
    # the reload column: auto's kernel of each; FP8 on the FP8 matmul (Hopper), W8A8/FP4
    # emulated, AutoRound's int4 on ExLlamaV2 (rewritten to the GPTQ layout), hqq's torch kernel
    assert t[:2] == [("fp16", "fp16"), ("fp16", gpu_bench.NO_GEMM)]
    t = [t[0]] + t[2:]
    assert t[:7] == [("fp16", "fp16"), ("fp8-llmc", "fp8"), ("w8a8-llmc", "emulated"),
                     ("nvfp4-llmc", "emulated"), ("mxfp4-llmc", "emulated"),
                     ("autoround-llmc", "exllama_v2"), ("hqq", "torch")]
    # then FP8's emulation, for the ratio (a time limit cuts from the end)
    assert t[7] == ("fp8-llmc", "emulated")
    assert t[8:] == [("autoround-llmc", "compressed"), ("autoround-llmc", "dequantized"),
                     ("autoround-llmc", "awq_marlin"), ("hqq", "dequantized")]
    # an A100 (cc 8.0) has no FP8 matmul: no such target
    a100 = [k for _, k, _ in gpu_bench.speed_targets(ckpts, tmp_path / "fp16", cc=8.0)]
    assert "fp8" not in a100


def _tiny_llama(d: Path) -> Path:
    """A 2-layer random Llama without a tokenizer (the jobs read token id rows)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=256)
    LlamaForCausalLM(cfg).to(torch.float16).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch
    root = tmp_path_factory.mktemp("bench_tiny")
    torch.manual_seed(0)
    torch.save([torch.randint(0, 256, (32,)) for _ in range(4)], root / "rows.pt")
    return _tiny_llama(root / "fp16"), root


def _default(tiny, method, backend):
    model, root = tiny
    spec = {"method": method, "backend": backend, "model": str(model),
            "rows": str(root / "rows.pt"), "seq_len": 32, "layers": 2,
            "out": str(root / f"out_{method}"), "device": "cpu"}
    return gpu_bench_jobs.job_default(spec)


def test_fp8_default_job_writes_what_transformers_fp8_kernel_loads(tiny, monkeypatch):
    import torch
    from transformers.quantizers import quantizer_compressed_tensors as hfq

    r = _default(tiny, "fp8", "llmcompressor")
    assert set(r["lib_s"]) == {"load", "quantize", "save"} and r["imports_s"]["backend"] > 0
    d = r["model_dir"]
    saved = json.loads((Path(d) / "config.json").read_text())["quantization_config"]
    assert kernels.saved_facts("compressed-tensors", saved)["fp8"]
    kind = gpu_bench.FORMAT[("fp8", "llmcompressor")]
    assert gpu_bench.auto_kernel(kind, d, 9.0) == "fp8"
    assert gpu_bench.auto_kernel(kind, d, 8.0) == "emulated"
    ids = torch.randint(0, 256, (1, 8))

    def run(kernel):
        if kernel == "fp8":  # qrecipe runs it on CUDA only: its transformers config, on CPU
            from transformers import AutoModelForCausalLM

            from qrecipe.kernels import hf_config
            qc = hf_config.quantization_config("compressed-tensors",
                                               kernels.get("compressed-tensors", "fp8"), saved)
            model = AutoModelForCausalLM.from_pretrained(d, quantization_config=qc)
        else:
            model = gpu_bench_jobs.load_for_speed(kernel, d, "cpu")
        model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
        return (kernels.loaded_kernels(model), gpu_bench_jobs.linear_weight_dtypes(model))
    # no FP8 GPU here: transformers refuses its kernel and compressed-tensors decompresses
    assert run("fp8") == ({"Linear[compressed-tensors decompressed]": 14}, {"float16": 14})
    assert run("emulated")[1] == {"float16": 14}
    # where transformers' hardware check passes (cc >= 8.9): FP8 weights, its FP8 linear
    check = hfq.CompressedTensorsHfQuantizer.validate_environment

    def on_hopper(self, *a, **k):
        check(self, *a, **k)
        self.use_fp8_kernel = self.quantization_config.use_optimized_inference
    monkeypatch.setattr(hfq.CompressedTensorsHfQuantizer, "validate_environment", on_hopper)
    assert run("fp8") == ({"CompressedTensorsFP8Linear": 14}, {"float8_e4m3fn": 14})


def test_hqq_default_job_quantizes_with_hqq_s_own_api(tiny):
    r = _default(tiny, "hqq", "hqq")
    assert r["per_layer"] == [] and r["lib_s"]["quantize"] > 0  # hqq emits no layer events
    assert (Path(r["model_dir"]) / "qmodel.pt").is_file()  # hqq's own save


def _doc(tmp_path):
    ckpts = {label: d for label, _, d in _ckpts(tmp_path)}

    def row(method, backend, runner, process_s, **kw):
        return {"method": method, "backend": backend, "runner": runner, "process_s": process_s,
                "lib_s": {"load": 1.0, "quantize": 10.0, "save": 2.0},
                "per_layer": [0.5, 0.5], "disk_bytes": 7e9, **kw}

    def spd(method, kernel, b1, b8, **kw):
        return {"method": method, "kernel": kernel, "load_s": 9.0, "reload_ok": True,
                "b1": {"prefill_tokens_per_s": 1e4, "decode_tokens_per_s": b1,
                       "decode_path": "graph", "decode_ms_per_step": 1000 / b1},
                "b8": {"prefill_tokens_per_s": 8e4, "decode_tokens_per_s": b8,
                       "decode_path": "graph", "decode_ms_per_step": 8000 / b8}, **kw}
    return {"device": "NVIDIA H100 80GB HBM3", "device_cc": 9.0, "shape": {"layers": 32},
            "rows": [row("fp8", "llmcompressor", "qrecipe", 50.0, model_dir=ckpts["fp8-llmc"]),
                     row("fp8", "llmcompressor", "backend_default", 40.0),
                     row("hqq", "hqq", "qrecipe", 60.0, model_dir=ckpts["hqq"]),
                     {"method": "hqq", "backend": "hqq", "runner": "backend_default",
                      "error": "rc=1"}],
            "speed": [spd("fp16", "fp16", 2000.0, 15000.0),
                      spd("fp8-llmc", "fp8", 3000.0, 24000.0,
                          loaded_modules={"CompressedTensorsFP8Linear": 224},
                          linear_weight_dtypes={"float8_e4m3fn": 224}),
                      spd("hqq", "torch", 800.0, 6000.0),
                      spd("fp8-llmc", "emulated", 1500.0, 12000.0,
                          loaded_modules={"Linear[compressed-tensors decompressed]": 224},
                          linear_weight_dtypes={"float16": 224})]}


def test_the_tables_show_each_new_method_against_its_default_and_fp16(tmp_path):
    doc = _doc(tmp_path)
    gpu_bench.link_reloads(doc)
    gpu_bench_table.derive(doc)
    md = gpu_bench_table.markdown(doc)
    assert doc["rows"][0]["kernel"] == "fp8" and doc["rows"][0]["reload"] == "ok"
    assert ("| fp8 | llmcompressor | 50.0 / 40.0 | 1.25 | 0.50 / 0.50 | 13.0 / 13.0 | "
            "7000 / 7000 | ok | fp8 | 3,000 (1.50x) | 24,000 (1.60x) |") in md
    assert "| emulated | 1,500 (0.75x) | 12,000 (0.80x) |" in md
    assert "| hqq | hqq | 60.0 / failed |  |" in md and "| torch | 800 (0.40x) |" in md
    assert "CompressedTensorsFP8Linear x224 (weights float8_e4m3fn x224)" in md
    assert doc["ratios"]["fp8-llmc/fp8/b1: decode vs fp16"] == 1.5
    assert doc["ratios"]["fp8/llmcompressor: process, qrecipe / default"] == 1.25


def test_an_old_json_still_renders():
    path = Path(__file__).resolve().parents[1] / "benchmarks/results/gpu_bench_h200_1layer.json"
    doc = json.loads(path.read_text())
    gpu_bench_table.derive(doc)
    md = gpu_bench_table.markdown(doc)
    assert "| gptq | gptqmodel | backend_default | 2.55 |" in md  # the original table
    assert "| awq | llmcompressor | 29.7 / failed |" in md  # its default failed there
    assert "| | | | | | | | | torch | 1,438 (0.51x) | 10,721 (0.56x) |" in md


def test_the_prefill_nll_is_the_model_s_own_loss_and_kernels_compare_with_their_reference(tiny):
    """The speed step's prefill NLL is the causal-LM loss over the rows (one batched forward);
    each kernel's perplexity gap is taken against the checkpoint's reference kernel, the
    dequantized one first, and fp16 (no reference of its own) gets none."""
    import math

    import torch
    from transformers import AutoModelForCausalLM

    import gpu_bench_table
    model_dir, root = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = torch.load(root / "rows.pt")
    nll = gpu_bench_jobs.prefill_nll(model, rows[:gpu_bench_jobs.NLL_ROWS])
    x = torch.stack(rows[:gpu_bench_jobs.NLL_ROWS])
    with torch.no_grad():
        loss = float(model(x, labels=x).loss)
    assert abs(nll - loss) < 1e-5 and nll > 0
    speed = [{"method": "fp16", "kernel": "fp16", "nll": 5.0},
             {"method": "awq-llmc", "kernel": "exllama_v2", "nll": 5.01},
             {"method": "awq-llmc", "kernel": "compressed", "nll": 5.002},
             {"method": "awq-llmc", "kernel": "dequantized", "nll": 5.0},
             {"method": "gptq", "kernel": "exllama_v2", "nll": 4.9},
             {"method": "gptq", "kernel": "torch", "nll": 5.0},
             {"method": "rtn", "kernel": "exllama_v2"}]  # an older run: no NLL
    gaps = gpu_bench_table.ppl_gaps(speed)
    assert set(gaps) == {("awq-llmc", "exllama_v2"), ("awq-llmc", "compressed"),
                         ("gptq", "exllama_v2")}
    ref, gap = gaps[("awq-llmc", "exllama_v2")]
    assert ref == "dequantized" and math.isclose(gap, math.exp(0.01) - 1)
    assert gaps[("gptq", "exllama_v2")][0] == "torch" and gaps[("gptq", "exllama_v2")][1] < 0
