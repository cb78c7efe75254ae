"""The child processes of benchmarks/gpu_bench.py: one job each, so imports, kernel builds and CUDA
state of one job never help the next and peak GPU memory is per job.

- qrecipe: a whole qrecipe job (run_job, eval off) with the h100_80gb profile; each method's bits
  and settings: QRECIPE_BITS.
- backend_default: the library's own API with its defaults on the same rows, timed around its
  load / quantize / save calls; qrecipe's layer log only observes its per-layer events (hqq
  emits none). llm-compressor's recipes as its examples write them: LLMC_DEFAULT.
- speed: reload every checkpoint with the named kernel, generate, the prefill NLL of a few
  calibration rows (prefill_nll: the kernels of one checkpoint must agree), prefill/decode at
  batch 1 and 8.
  The kernels are qrecipe's (qrecipe/kernels/table.py), `fp8` (transformers' FP8 layers) included.
- prebuild: build one gptqmodel JIT extension (what a first run on a fresh machine pays).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

TEXT = "pkg://qrecipe/texts/jargon_file_4.4.7.txt"


# auto-round's recipe for the qrecipe job (method.preset) and the iterations of the library's own
# job: "light" is 50 iterations per layer where its default is 200, so the 32 layers of the 7B
# shape fit one 10-minute device command beside the other methods; both jobs tune as long
AUTOROUND_PRESET = "light"
# bits and per-method settings of each method's qrecipe job (the one place): w4 g128 unless named
DEFAULT_BITS = ("bits=w4", "bits.group_size=128")
QRECIPE_BITS = {
    "bnb8": ("bits=w8", "bits.group_size=128"),
    "fp8": ("bits=w8",),  # the FP8 scheme fixes its grouping: bits.group_size is not used
    "w8a8": ("bits=w8", "bits.group_size=-1"),  # int8 per channel, as the W8A8 preset
    "autoround": (*DEFAULT_BITS, f"method.preset={AUTOROUND_PRESET}"),
    # hqq's own default group; method.axis stays 1 (hqq's default, run by its torch kernel on
    # CUDA too): axis 0 is for hqq's ATen CUDA kernels, which qrecipe's kernel table does not offer
    "hqq": ("bits=w4", "bits.group_size=64"),
    "nvfp4": ("bits=w4", "bits.group_size=16"),  # the format's own group
    "mxfp4": ("bits=w4", "bits.group_size=32"),  # the format's own group
}


def qrecipe_overrides(spec) -> list:
    """The Hydra overrides of a qrecipe job: the bench's model and rows, h100_80gb in float16,
    eval off, and the method's bits (QRECIPE_BITS)."""
    method = {"bnb4": "bnb", "bnb8": "bnb"}.get(spec["method"], spec["method"])
    return [f"method={method}", f"method.backend={spec['backend']}", "model=local",
            f"model.path={spec['model']}", "calibration=local", f"calibration.path={TEXT}",
            f"calibration.num_samples={spec['samples']}",
            f"calibration.seq_len={spec['seq_len']}", "hardware=h100_80gb",
            "hardware.dtype=float16", "eval=none", "hardware.assign_gpus=false",
            f"cache.dir={spec['qcache']}", f"recipe_name=bench_{spec['name']}",
            *QRECIPE_BITS.get(spec["method"], DEFAULT_BITS), *spec.get("overrides", [])]


def job_qrecipe(spec) -> dict:
    t_imp = time.perf_counter()
    from hydra import compose, initialize_config_dir

    from qrecipe.paths import config_dir
    from qrecipe.recipes import schema
    from qrecipe.run.runner import run_job

    ov = qrecipe_overrides(spec)
    schema.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose(config_name="config", overrides=ov)
    compose_s = time.perf_counter() - t_imp  # qrecipe's own cost: not a library import
    out = Path(spec["out"])
    t0 = time.perf_counter()
    status = run_job(cfg, out, keep_failed_dir=True)
    wall = time.perf_counter() - t0
    if status != "ok":
        err = json.loads((out / "error.json").read_text()) if (out / "error.json").exists() else {}
        raise RuntimeError(f"qrecipe {status}: {err.get('error')}")
    m = json.loads((out / "metrics.json").read_text())
    d = m["quantize_details"]
    fps = json.loads((out / "fingerprints.json").read_text())
    over = m.get("overhead") or {}
    # the libraries' imports a direct script pays too: transformers (qrecipe's load stage) and
    # the backend's own package (its adapter)
    imports = {**over.get("imports_s", {}), "backend": (d.get("seconds") or {}).get("import", 0)}
    return {"wall_s": wall, "stages_s": m["time_s"], "lib_s": d.get("seconds") or {},
            "imports_s": imports, "qrecipe_compose_s": round(compose_s, 3),
            "qrecipe_overhead": over,  # metrics.json's own split of the wall
            "per_layer": [r["seconds"] for r in m.get("per_layer") or []],
            "rows_sha256": fps.get("calibration", {}).get("token_ids_sha256"),
            "model_dir": str(out / "model"),
            "details": {k: d.get(k) for k in ("calib_batch_size", "pack_impl", "offload_to_disk",
                                              "stream_activations", "gptq_cuda_block_update",
                                              "tensor_core_hessian", "fast_layer_loop", "dtype",
                                              "pack_backend")}}


def _observe_layers(backend: str, n_layers: int):
    import qrecipe.backends  # noqa: F401  (the adapters register the libraries' layer hooks)
    from qrecipe.telemetry.layerlog import layer_log
    return layer_log(backend, n_layers, None)


def job_default(spec) -> dict:
    """The library's own API with its defaults: load, quantize, save, each timed (bitsandbytes
    quantizes while loading: its load is its quantize)."""
    import torch
    rows = torch.load(spec["rows"])
    run = {"gptqmodel": _default_gptqmodel, "llmcompressor": _default_llmcompressor,
           "bitsandbytes": _default_bitsandbytes, "hqq": _default_hqq}[spec["backend"]]
    t_imp = time.perf_counter()
    imports, (t0, t1, t2), per_layer = run(spec, rows, t_imp)
    t3 = time.perf_counter()
    t = {"load": round(t1 - t0, 2), "quantize": round(t2 - t1, 2), "save": round(t3 - t2, 2)}
    return {"wall_s": t3 - t0, "lib_s": t, "imports_s": imports, "per_layer": per_layer,
            "model_dir": spec["out"]}


def _default_gptqmodel(spec, rows, t_imp):
    from gptqmodel import GPTQModel, QuantizeConfig
    imports = {"backend": time.perf_counter() - t_imp}
    qc = QuantizeConfig(bits=4, group_size=128) if spec["method"] == "gptq" else \
        QuantizeConfig(bits=4, group_size=128, method="awq", format="gemm")
    t0 = time.perf_counter()
    model = GPTQModel.load(spec["model"], qc)
    data = [{"input_ids": r.tolist(), "attention_mask": [1] * len(r)} for r in rows]
    t1 = time.perf_counter()
    with _observe_layers("gptqmodel", spec["layers"]) as layers:
        model.quantize(data)
    t2 = time.perf_counter()
    model.save(spec["out"])
    return imports, (t0, t1, t2), [r["seconds"] for r in layers.rows]


def llmc_default_recipe(method: str) -> tuple:
    """llm-compressor's own recipe for a method, as its examples write it, and whether it reads
    the calibration rows (FP8_DYNAMIC and MXFP4 need none: their examples pass no data)."""
    from llmcompressor.modifiers.awq import AWQModifier
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    lin = {"targets": "Linear", "ignore": ["lm_head"]}
    if method in ("gptq", "awq"):
        return (GPTQModifier if method == "gptq" else AWQModifier)(scheme="W4A16", **lin), True
    if method == "fp8":
        return QuantizationModifier(scheme="FP8_DYNAMIC", **lin), False
    if method == "w8a8":  # examples/quantization_w8a8_int8: SmoothQuant 0.8, then GPTQ W8A8
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
        return [SmoothQuantModifier(smoothing_strength=0.8),
                GPTQModifier(scheme="W8A8", **lin)], True
    if method == "autoround":
        from auto_round.cli.main import RECIPES
        from llmcompressor.modifiers.autoround import AutoRoundModifier
        # its defaults (torch.compile on, batch 8, lr from the iterations) but the iterations
        # of the qrecipe job's preset: the same tuning work, timed
        return AutoRoundModifier(scheme="W4A16", iters=RECIPES[AUTOROUND_PRESET]["iters"],
                                 **lin), True
    if method in ("nvfp4", "mxfp4"):  # NVFP4 calibrates its activations' global scale
        return QuantizationModifier(scheme=method.upper(), **lin), method == "nvfp4"
    raise ValueError(f"no llm-compressor default for {method}")


def _default_llmcompressor(spec, rows, t_imp):
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM
    recipe, uses_rows = llmc_default_recipe(spec["method"])
    imports = {"backend": time.perf_counter() - t_imp}
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype="auto")
    data = {}
    if uses_rows:
        ds = Dataset.from_dict({"input_ids": [r.tolist() for r in rows],
                                "attention_mask": [[1] * len(r) for r in rows]})
        data = {"dataset": ds, "num_calibration_samples": len(rows),
                "max_seq_length": spec["seq_len"]}
    t1 = time.perf_counter()
    with _observe_layers("llmcompressor", spec["layers"]) as layers:
        oneshot(model=model, recipe=recipe, **data)
    t2 = time.perf_counter()
    model.save_pretrained(spec["out"], save_compressed=True)
    return imports, (t0, t1, t2), [r["seconds"] for r in layers.rows]


def _default_bitsandbytes(spec, rows, t_imp):
    """bitsandbytes quantizes while loading."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    imports = {"backend": time.perf_counter() - t_imp}
    qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4") \
        if spec["method"] == "bnb4" else BitsAndBytesConfig(load_in_8bit=True)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(spec["model"], quantization_config=qc,
                                                 device_map={"": "cuda"})
    t2 = time.perf_counter()
    model.save_pretrained(spec["out"])
    return imports, (t0, t0, t2), []


def _default_hqq(spec, rows, t_imp):
    """hqq's own API as its README writes it: the dense model loaded, every linear quantized
    onto the device (BaseQuantizeConfig's defaults: 4 bits, group 64, axis 1), hqq's save.
    Not transformers' HqqConfig: transformers 5.17 quantizes nothing with it on load (its
    HqqHfQuantizer.get_quantize_ops raises NotImplementedError). No per-layer events."""
    import torch
    from hqq.core.quantize import BaseQuantizeConfig
    from hqq.models.hf.base import AutoHQQHFModel
    from transformers import AutoModelForCausalLM
    imports = {"backend": time.perf_counter() - t_imp}
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float16)
    t1 = time.perf_counter()
    AutoHQQHFModel.quantize_model(model, quant_config=BaseQuantizeConfig(nbits=4, group_size=64),
                                  compute_dtype=torch.float16,
                                  device=spec.get("device", "cuda"))
    t2 = time.perf_counter()
    AutoHQQHFModel.save_quantized(model, spec["out"])
    return imports, (t0, t1, t2), []


def job_speed(spec) -> dict:
    """Every target in one process (one import, one CUDA context); each target's model is freed
    before the next; one target's failure is recorded and the others still run."""
    import gc

    import torch

    from qrecipe.evaluation.speed import measure
    from qrecipe.kernels.table import loaded_kernels

    rows = torch.load(spec["rows"])
    ids = rows[0]
    if spec.get("exllama_stream"):  # kernel_speed.py --exllama-current-stream
        from exllama_stream import use_patched
        use_patched(Path(spec["exllama_stream"]))
    results = []
    for method, kernel, d in spec["targets"]:
        res = {"method": method, "kernel": kernel}
        try:
            t0 = time.perf_counter()
            model = load_for_speed(kernel, d, "cuda", spec.get("dtype"))
            res["load_s"] = time.perf_counter() - t0
            gen = model.generate(ids[:16].unsqueeze(0).cuda(), max_new_tokens=8,
                                 do_sample=False, pad_token_id=0)
            # read after a forward: compressed-tensors decompresses on the first one
            res.update(generated_tokens=int(gen.shape[1] - 16),
                       loaded_modules=loaded_kernels(model),
                       linear_weight_dtypes=linear_weight_dtypes(model),
                       weights_bytes=int(model.get_memory_footprint()),
                       nll=prefill_nll(model, rows[:NLL_ROWS]))
            for b in (1, 8):
                res[f"b{b}"] = measure(model, ids, 128, 32, batch=b, repeats=3)
            res["reload_ok"] = res["generated_tokens"] == 8
            del model, gen
        except Exception as e:  # noqa: BLE001 - recorded; the next target still runs
            res["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        gc.collect()
        torch.cuda.empty_cache()
        results.append(res)
        Path(spec["result"] + ".partial").write_text(json.dumps(results, default=str))
    return {"targets": results}


# Rows of the prefill NLL (calibration rows, 512 tokens in the benchmark's runs): long enough that
# ExLlamaV2 takes its path for more than 50 rows (the weights dequantized, then cuBLAS's
# half-precision GEMM), the path a perplexity evaluation runs
NLL_ROWS = 4


def prefill_nll(model, rows) -> float:
    """Mean next-token NLL over the rows in one batched forward: the logits a kernel gives on a
    long prefill, compared between kernels of one checkpoint (gpu_bench_table: nll vs its
    reference kernel). A random model's NLL says nothing of quality; the kernels must agree."""
    import torch
    x = torch.stack(list(rows)).to(model.device)
    with torch.no_grad():
        logits = model(x).logits.float()
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1),
                                                   x[:, 1:].flatten()))


def load_for_speed(kernel: str, d, device: str, dtype=None):
    """The checkpoint at d as the speed step runs it, in dtype (None: fp16 for the dense model,
    the checkpoint's own for the others): dense, or qrecipe's loader with a kernel of its table
    (`fp8`: transformers' FP8 layers, FP8 weights kept and an FP8 matmul where the GPU has
    cc >= 8.9; elsewhere transformers warns and takes compressed-tensors' own route, which
    loaded_modules then shows)."""
    from qrecipe.inputs import models
    if kernel in ("fp16", NO_GEMM):
        model = models.load_causal_lm(Path(d), dtype or "float16", device)
        return strip_gemms(model) if kernel == NO_GEMM else model
    return models.load_causal_lm(Path(d), dtype or "auto", device, kernel=kernel, allow_jit=True)


# The dense model with its decoder layers' projections made free (kernel_speed.py): what the rest
# of a decode step costs (norms, rotary, attention over the cache, residuals, lm_head, launches),
# which no GEMM kernel can remove
NO_GEMM = "no-gemm"


def strip_gemms(model):
    """Every Linear inside model.model.layers replaced by one that returns a view of a zero
    buffer it never writes: no kernel runs and no weight is read, so a decode step of this model
    times everything of the step but those GEMMs. The buffer is shared per width and grows to the
    largest input seen; nothing downstream writes its input in place (the graph check would show
    it as a replay that differs from the eager step)."""
    import torch

    bufs: dict = {}

    class Free(torch.nn.Module):
        def __init__(self, out_features: int, dtype, device):
            super().__init__()
            self.out_features, self.dtype, self.device = out_features, dtype, device

        def forward(self, x):
            n = x.numel() // x.shape[-1]
            key = self.out_features
            if key not in bufs or bufs[key].shape[0] < n:
                bufs[key] = torch.zeros(max(n, 1024), key, dtype=self.dtype, device=self.device)
            return bufs[key][:n].view(*x.shape[:-1], key)

    for layer in model.model.layers:
        for name, mod in list(layer.named_modules()):
            if isinstance(mod, torch.nn.Linear):
                parent = layer.get_submodule(name.rpartition(".")[0]) if "." in name else layer
                setattr(parent, name.rpartition(".")[2],
                        Free(mod.out_features, mod.weight.dtype, mod.weight.device))
    torch.cuda.empty_cache()
    return model


def linear_weight_dtypes(model) -> dict:
    """dtype -> count of the Linear weights in the decoder layers: float8_e4m3fn where FP8 is
    kept (an FP8 matmul), float16 where compressed-tensors decompressed the weights (a dense
    matmul, activations only quantized and dequantized), uint8/int32 for packed int kernels."""
    import torch
    out: dict = {}
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}" and \
                isinstance(w, torch.Tensor):
            key = str(w.dtype).replace("torch.", "")
            out[key] = out.get(key, 0) + 1
    return out


def job_prebuild(spec) -> dict:
    t0 = time.perf_counter()
    if spec["ext"] == "gptq_block":
        from gptqmodel.quantization.gptq_cuda import block_update_available
        ok = bool(block_update_available())
    else:
        from gptqmodel import extension
        ok = all(extension.load(spec["ext"]).values())
    return {"ext": spec["ext"], "ok": ok, "build_s": time.perf_counter() - t0}


def child(spec_path: str) -> None:
    import logging
    t_imp = time.perf_counter()
    import torch
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    spec = json.loads(Path(spec_path).read_text())
    if spec["runner"] != "prebuild":
        torch.cuda.reset_peak_memory_stats()  # also starts CUDA: both runners pay it here
    torch_s = time.perf_counter() - t_imp
    if os.environ.get("BENCH_FOLLOW_CHUNK_MIB"):  # the hash followers' read size, compared
        from qrecipe.record import filehash
        filehash.FOLLOW_CHUNK = int(os.environ["BENCH_FOLLOW_CHUNK_MIB"]) << 20
    fn = {"qrecipe": job_qrecipe, "backend_default": job_default, "speed": job_speed,
          "prebuild": job_prebuild}[spec["runner"]]
    res = fn(spec)
    if "imports_s" in res:
        res["imports_s"]["torch"] = torch_s
    if spec["runner"] != "prebuild":
        res["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
    Path(spec["result"]).write_text(json.dumps(res, default=str))
