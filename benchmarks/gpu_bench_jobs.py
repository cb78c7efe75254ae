"""The child processes of benchmarks/gpu_bench.py: one job each, so imports, kernel builds and CUDA
state of one job never help the next and peak GPU memory is per job.

- qrecipe: a whole qrecipe job (run_job, eval off) with the h100_80gb profile.
- backend_default: the library's own API with its defaults on the same rows, timed around its
  load / quantize / save calls; qrecipe's layer log only observes its per-layer events.
- speed: reload every checkpoint with the named kernel, generate, prefill/decode at batch 1 and 8.
- prebuild: build one gptqmodel JIT extension (what a first run on a fresh machine pays).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

TEXT = "pkg://qrecipe/texts/jargon_file_4.4.7.txt"


def job_qrecipe(spec) -> dict:
    t_imp = time.perf_counter()
    from hydra import compose, initialize_config_dir

    from qrecipe.paths import config_dir
    from qrecipe.recipes import schema
    from qrecipe.run.runner import run_job

    method = {"bnb4": "bnb", "bnb8": "bnb"}.get(spec["method"], spec["method"])
    ov = [f"method={method}", f"method.backend={spec['backend']}", "model=local",
          f"model.path={spec['model']}", "calibration=local", f"calibration.path={TEXT}",
          f"calibration.num_samples={spec['samples']}", f"calibration.seq_len={spec['seq_len']}",
          "hardware=h100_80gb", "hardware.dtype=float16", "eval=none",
          "hardware.assign_gpus=false", f"cache.dir={spec['qcache']}",
          f"recipe_name=bench_{spec['name']}",
          "bits=w8" if spec["method"] == "bnb8" else "bits=w4", "bits.group_size=128",
          *spec.get("overrides", [])]
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
    import torch
    rows = torch.load(spec["rows"])
    out, m, b = Path(spec["out"]), spec["method"], spec["backend"]
    per_layer, t = [], {}
    t_imp = time.perf_counter()
    if b == "gptqmodel":
        from gptqmodel import GPTQModel, QuantizeConfig
        imports = {"backend": time.perf_counter() - t_imp}
        qc = QuantizeConfig(bits=4, group_size=128) if m == "gptq" else \
            QuantizeConfig(bits=4, group_size=128, method="awq", format="gemm")
        t0 = time.perf_counter()
        model = GPTQModel.load(spec["model"], qc)
        data = [{"input_ids": r.tolist(), "attention_mask": [1] * len(r)} for r in rows]
        t1 = time.perf_counter()
        with _observe_layers("gptqmodel", spec["layers"]) as layers:
            model.quantize(data)
        t2 = time.perf_counter()
        per_layer = [r["seconds"] for r in layers.rows]
        model.save(str(out))
    elif b == "llmcompressor":
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.awq import AWQModifier
        from llmcompressor.modifiers.quantization import GPTQModifier
        from transformers import AutoModelForCausalLM
        imports = {"backend": time.perf_counter() - t_imp}
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype="auto")
        ds = Dataset.from_dict({"input_ids": [r.tolist() for r in rows],
                                "attention_mask": [[1] * len(r) for r in rows]})
        mod = GPTQModifier if m == "gptq" else AWQModifier
        t1 = time.perf_counter()
        with _observe_layers("llmcompressor", spec["layers"]) as layers:
            oneshot(model=model, dataset=ds,
                    recipe=mod(targets="Linear", scheme="W4A16", ignore=["lm_head"]),
                    num_calibration_samples=len(rows), max_seq_length=spec["seq_len"])
        t2 = time.perf_counter()
        per_layer = [r["seconds"] for r in layers.rows]
        model.save_pretrained(str(out), save_compressed=True)
    else:  # bitsandbytes quantizes while loading
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig
        imports = {"backend": time.perf_counter() - t_imp}
        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4") \
            if m == "bnb4" else BitsAndBytesConfig(load_in_8bit=True)
        t0 = t1 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(spec["model"], quantization_config=qc,
                                                     device_map={"": "cuda"})
        t2 = time.perf_counter()
        model.save_pretrained(str(out))
    t3 = time.perf_counter()
    t = {"load": round(t1 - t0, 2), "quantize": round(t2 - t1, 2), "save": round(t3 - t2, 2)}
    return {"wall_s": t3 - t0, "lib_s": t, "imports_s": imports, "per_layer": per_layer,
            "model_dir": str(out)}


def job_speed(spec) -> dict:
    """Every target in one process (one import, one CUDA context); each target's model is freed
    before the next; one target's failure is recorded and the others still run."""
    import gc

    import torch

    from qrecipe.evaluation.speed import measure
    from qrecipe.inputs import models
    from qrecipe.kernels.table import loaded_kernels

    ids = torch.load(spec["rows"])[0]
    results = []
    for method, kernel, d in spec["targets"]:
        res = {"method": method, "kernel": kernel}
        try:
            t0 = time.perf_counter()
            if kernel == "fp16":
                model = models.load_causal_lm(Path(d), "float16", "cuda")
            else:
                model = models.load_causal_lm(Path(d), "auto", "cuda", kernel=kernel,
                                              allow_jit=True)
            res["load_s"] = time.perf_counter() - t0
            gen = model.generate(ids[:16].unsqueeze(0).cuda(), max_new_tokens=8,
                                 do_sample=False, pad_token_id=0)
            res.update(generated_tokens=int(gen.shape[1] - 16),
                       loaded_modules=loaded_kernels(model),
                       weights_bytes=int(model.get_memory_footprint()))
            for b in (1, 8):
                res[f"b{b}"] = measure(model, ids, 128, 32, batch=b, repeats=3)
            res["reload_ok"] = res["generated_tokens"] == 8
            del model, gen
        except Exception as e:  # recorded; the next target still runs
            res["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        gc.collect()
        torch.cuda.empty_cache()
        results.append(res)
        Path(spec["result"] + ".partial").write_text(json.dumps(results, default=str))
    return {"targets": results}


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
