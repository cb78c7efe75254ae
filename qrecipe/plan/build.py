"""The plan of one model on one device: will it fit, in which format, how long quantizing takes,
and which recipe to start from. From metadata only (qrecipe/inputs/shapes.py): never a weight,
never torch. `qrecipe plan` (qrecipe/commands/plan.py) prints it; a run's report compares it with
what the run measured (qrecipe/plan/compare.py).

The plan is a dict, printed as is by `qrecipe plan --json` (a stable interface): {"model",
"hardware", "settings", "rows", "advice", "recipes"} where rows is an object keyed by fp32, fp16,
int8, nf4, w8, w4, w3, w2, fp8, w8a8, nvfp4, mxfp4, each with weights_bytes, inference_bytes,
kv_cache_bytes, disk_bytes, quantize_peak_bytes {backend: bytes} (each backend's first method on
the row: GPTQ for gptqmodel/llm-compressor on the w-rows), quantize [{method,
backend, peak_bytes, host_bytes, seconds, seconds_range ([low, high] for a CPU time from another
machine, else null), time_source}], fits and margin_bytes (against the profile's usable memory),
and margin_bytes_by_profile (every one-GPU hardware profile); hardware.cpu_gemm_gflops: this
machine's probe (the cpu profile only; qrecipe/plan/probe.py); "recipes" ranked best first
(advice.py); with --from, "measured" (ranked runs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from qrecipe.backends.llmcompressor import placement
from qrecipe.inputs.shapes import ModelShape, read_shape
from qrecipe.plan import estimate as est
from qrecipe.plan.advice import rank_measured, recipes_advice, rules
from qrecipe.plan.hardware import Profile, gpu_profiles, profile
from qrecipe.plan.probe import this_machine
from qrecipe.plan.times import estimate_time, load_measurements

BITS = {"fp32": 32, "fp16": 16, "int8": 8, "nf4": 4, "w8": 8, "w4": 4, "w3": 3, "w2": 2,
        "fp8": 8, "w8a8": 8, "nvfp4": 4, "mxfp4": 4}


def build(shape: ModelShape, hw: str = "cpu", context: int = 2048, batch: int = 1,
          group: int = 128, num_samples: int = 128, seq_len: int = 512,
          gflops: Optional[float] = None) -> Dict[str, Any]:
    """gflops: this machine's float32 GEMM rate (the `cpu` profile: CPU times are scaled to it)."""
    p = profile(hw)
    measured, gpus = load_measurements(), gpu_profiles()
    rows = {}
    for fmt in est.FORMATS:
        inf = est.inference_bytes(shape, fmt, context, batch, group)
        quant = [quantize_figures(shape, fmt, m, b, p, measured, num_samples, seq_len, group, gflops)
                 for m, b in est.METHODS[fmt]]
        rows[fmt] = {
            "bits": BITS[fmt], "group_size": group if fmt in est.INT_BITS else None,
            "weights_bytes": est.weights_bytes(shape, fmt, group),
            "inference_bytes": inf,
            "kv_cache_bytes": est.kv_cache_bytes(shape, fmt, context, batch),
            "disk_bytes": est.disk_bytes(shape, fmt, group),
            "quantize_peak_bytes": _first_per_backend(quant),
            "quantize": quant,
            "fits": inf <= p.usable_bytes, "margin_bytes": p.usable_bytes - inf,
            "margin_bytes_by_profile": {n: g.usable_bytes - inf for n, g in gpus.items()}}
    if "nf4" in rows:
        rows["nf4"]["weights_bytes_no_double_quant"] = est.weights_bytes(
            shape, "nf4", group, double_quant=False)
    for hqq, bits in est.HQQ_BITS.items():  # the same width in hqq's layout (method=hqq)
        if f"w{bits}" in rows:
            rows[f"w{bits}"].update(hqq_weights_bytes=est.weights_bytes(shape, hqq, group),
                                    hqq_disk_bytes=est.disk_bytes(shape, hqq, group))
    return {"model": {**shape.to_dict(), "params": est.total_params(shape),
                      "embedding_params": est.embedding_params(shape),
                      "embedding_kept": est.EMBEDDING_KEPT},
            "hardware": {"name": p.name, "label": p.label, "device": p.device,
                         "memory_bytes": p.memory_bytes, "usable_bytes": p.usable_bytes,
                         "cpu_gemm_gflops": gflops},
            "settings": {"context": context, "batch": batch, "group_size": group,
                         "num_samples": num_samples, "seq_len": seq_len},
            "rows": rows}


def _first_per_backend(quant: List[Dict[str, Any]]) -> Dict[str, int]:
    """backend -> the peak of its first method on a row (the table's order puts GPTQ first
    where a backend has it): the row's quantize peak column."""
    out: Dict[str, int] = {}
    for q in quant:
        out.setdefault(q["backend"], q["peak_bytes"])
    return out


def quantize_figures(shape: ModelShape, fmt: str, method: str, backend: str, p: Profile,
              measured: List[dict], n: int, L: int, group: int,
              gflops: Optional[float] = None) -> Dict[str, Any]:
    peak = est.quantize_peak_bytes(shape, fmt, method, backend, p.device, n, L, group)
    copies = est.CALIB_COPIES[p.device].get((method, backend), 0)
    work = 2 if p.device == "cuda" else est.DTYPE_BYTES[shape.dtype]
    resident, settings = _model_on_gpu(shape, method, backend, p), dict(p.settings)
    if backend == "llmcompressor" and not resident:
        settings["model_on_gpu"] = False  # the profile's key holds only where the model fits
    t = estimate_time(measured, method, backend, p.device, est.layer_linear_params(shape),
                      shape.layers, n, L, p.tflops, BITS[fmt] if method == "bnb" else None,
                      gflops, settings)
    host = est.host_bytes(shape, backend) if p.device == "cuda" else None
    if resident:  # the whole model on the GPU, only the process on the host
        peak, host = peak + est.total_params(shape) * work, int(est.CPU_PROCESS_BYTES[backend])
    return {"method": method, "backend": backend, "peak_bytes": peak, "host_bytes": host,
            "calib_bytes": n * L * shape.hidden * work * copies,
            "fits": peak <= p.usable_bytes,
            "seconds": t and t["seconds"], "seconds_range": t and t["range"],
            "time_source": t["source"] if t else
            f"no {'GPU' if p.device == 'cuda' else 'CPU'} measurement of this method/backend "
            "(qrecipe/plan/measurements.json)"}


def _model_on_gpu(shape: ModelShape, method: str, backend: str, p: Profile) -> bool:
    """Whether a run on this profile loads the whole model onto the GPU (llm-compressor with
    hardware.model_on_gpu, for its methods and where the weights fit: placement.py)."""
    return (backend == "llmcompressor" and method in placement.METHODS and p.device == "cuda"
            and bool(dict(p.settings).get("model_on_gpu"))
            and placement.fits(est.total_params(shape) * 2, p.usable_bytes))  # 16-bit on GPUs


def model_args(shape: ModelShape) -> str:
    """The overrides that point a recipe at the planned model."""
    if shape.source != "local" and "/" not in shape.name and not shape.name.endswith(".gguf"):
        return f"model={shape.name}"  # a shipped model config
    return f"model=local model.source={shape.source} model.path={shape.name} " \
           f"model.dtype={shape.dtype}"


def hw_args(name: str) -> str:
    """The hardware override of a run on this profile (every GPU profile is a hardware config;
    cpu_<N>gb is the cpu one)."""
    return "hardware=cpu" if name.startswith("cpu") else f"hardware={name}"


def full_plan(model: str, hw: str, context: int, batch: int, group: int, num_samples: int,
              seq_len: int, dtype: Optional[str], revision: str,
              from_dirs: Optional[List[Path]] = None) -> Dict[str, Any]:
    """The plan of MODEL as the user named it, with advice, recipes and (from_dirs) measured
    runs."""
    shape = read_shape(model, revision, dtype)
    gflops = this_machine()["gflops"] if hw == "cpu" else None  # seconds, once per machine
    plan = build(shape, hw, context, batch, group, num_samples, seq_len, gflops)
    plan["advice"] = rules(plan["rows"])
    plan["recipes"] = recipes_advice(plan, model_args(shape), hw_args(hw))
    if from_dirs:
        plan["measured"] = rank_measured(from_dirs, plan["hardware"]["usable_bytes"])
    return plan
