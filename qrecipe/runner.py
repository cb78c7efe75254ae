"""One job, in a fixed order: validate -> load -> calibrate -> quantize -> save -> evaluate ->
report. Every stage is timed; the manifest written at the very end marks the run complete.

The runner never lets an exception escape to Hydra: a user error becomes one line and status
"user_error" (exit code 2), a bug becomes a traceback in run.log and status "crash" (exit 1).
In a sweep both leave error.json in the job's directory so the sweep report shows the row.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict

from omegaconf import DictConfig, OmegaConf

from . import data, models, outputs
from .backends import QuantizeRequest
from .cache import Cache
from .errors import QRecipeError
from .fingerprint import hash_files, sha256_text
from .gpus import assigned_gpus
from .monitor import Stages
from .validate import resolve_paths, validate

log = logging.getLogger("qrecipe")


def run_job(cfg: DictConfig, out: Path | None = None, keep_failed_dir: bool = True) -> str:
    """Run one composed config into `out` (Hydra's output dir by default). Returns the status:
    "ok", "user_error" or "crash"."""
    if out is None:
        from hydra.core.hydra_config import HydraConfig
        out = Path(HydraConfig.get().runtime.output_dir)
    out = Path(out)
    # A dry run leaves no directory behind, whatever its outcome.
    keep_failed_dir = keep_failed_dir and not cfg.get("dry_run", False)
    try:
        _run(cfg, out)
        return "ok"
    except QRecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        _fail(out, "user_error", str(e), keep_failed_dir)
        return "user_error"
    except Exception as e:  # a bug: keep everything for the bug report
        log.exception("qrecipe crashed")
        _fail(out, "crash", f"{type(e).__name__}: {e}", True, traceback.format_exc())
        return "crash"


def _fail(out: Path, status: str, message: str, keep: bool, tb: str | None = None) -> None:
    if not keep:
        # A single run rejected by the user's input leaves nothing behind that could pass for a
        # result (it never wrote anything but Hydra's own .hydra/ and the log).
        shutil.rmtree(out, ignore_errors=True)
        return
    outputs.write_json(out / outputs.ERROR, {"status": status, "error": message,
                                              "traceback": tb})


def _run(cfg: DictConfig, out: Path) -> None:
    # GPUs are taken before anything can initialize CUDA (no-op on CPU).
    with assigned_gpus(cfg.hardware, Path(cfg.cache.dir).expanduser() / "gpu-locks"):
        _run_stages(cfg, out)


def _run_stages(cfg: DictConfig, out: Path) -> None:
    stages = Stages()
    with stages.stage("validate"):
        resolve_paths(cfg)
        plan = validate(cfg)
    log.info("recipe %s: %s via %s, w%d g%d, model %s (%s, %d layers)", cfg.recipe_name,
             cfg.method.name, plan.backend.name, cfg.bits.width, cfg.bits.group_size,
             cfg.model.path, plan.model.architecture, plan.model.num_layers)
    if cfg.dry_run:
        print(f"dry run: valid: {cfg.recipe_name}: {cfg.method.name} via {plan.backend.name}, "
              f"w{cfg.bits.width} g{cfg.bits.group_size}", file=sys.stderr)
        shutil.rmtree(out, ignore_errors=True)  # nothing was made; leave no run directory
        return
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_lock(out, cfg)
    _set_threads(cfg.hardware)
    if cfg.cache.enabled:
        cache = Cache(Path(cfg.cache.dir))
    else:
        # Caching off means nothing is reused, the dequantized GGUF included: the job works in a
        # fresh, private cache that is deleted when it ends.
        cache = Cache(Path(tempfile.mkdtemp(prefix="qrecipe-nocache-")))
    try:
        _pipeline(cfg, out, plan, stages, cache)
    finally:
        if not cfg.cache.enabled:
            shutil.rmtree(cache.root, ignore_errors=True)


def _pipeline(cfg: DictConfig, out: Path, plan, stages: Stages, cache: Cache) -> None:
    dtype = cfg.hardware.dtype or cfg.model.dtype
    device = cfg.hardware.device

    with stages.stage("load"):
        model_fp = models.fingerprint(cfg.model)
        model_dir = models.materialize(cfg.model, cache.root, model_fp)
        tokenizer = models.load_tokenizer(model_dir)
        tok_fp = hash_files(p for p in model_dir.iterdir() if p.name.startswith("tokenizer"))
    fps: Dict[str, Any] = {"model_weights_sha256": model_fp, "tokenizer_sha256": tok_fp}

    rows = None
    if plan.support.needs_calibration:
        with stages.stage("calibrate"):
            # one source or a weighted mix; chat jsonl through the chat template
            from .calibration import build
            rows, fps["calibration"] = build(cfg.calibration, tokenizer, tok_fp, cache)

    model_out = out / "model"
    with stages.stage("quantize", memory=True):
        result = plan.backend.quantize(QuantizeRequest(
            model_dir=model_dir, out_dir=model_out, method=cfg.method, bits=cfg.bits.width,
            group_size=cfg.bits.group_size, device=device, dtype=dtype, calibration=rows,
            hardware=cfg.hardware, seed=cfg.seed))
    with stages.stage("save"):
        tokenizer.save_pretrained(model_out)
        weights = [p for p in model_out.iterdir() if p.suffix in (".safetensors", ".bin")]
        fps["quantized_weights_sha256"] = hash_files(weights)

    metrics: Dict[str, Any] = {
        "recipe": cfg.recipe_name, "method": cfg.method.name, "backend": plan.backend.name,
        "bits": cfg.bits.width, "group_size": cfg.bits.group_size, "format": result.format,
        "quantize_details": result.details, "model": {
            "source": cfg.model.source, "path": cfg.model.path, "revision": cfg.model.revision,
            "architecture": plan.model.architecture, "layers": plan.model.num_layers},
        "size": {"model_dir_bytes": outputs.dir_size(model_out)},
    }
    if cfg.eval.enabled:
        with stages.stage("evaluate"):
            metrics["eval"] = _evaluate(cfg, model_dir, model_out, tokenizer, tok_fp, model_fp,
                                        dtype, cache, fps)
        metrics["size"]["footprint_bytes"] = metrics["eval"]["quantized"].pop("footprint_bytes")
        metrics["size"]["fp_footprint_bytes"] = (metrics["eval"].get("fp") or {}).get(
            "footprint_bytes")
    metrics["time_s"] = stages.seconds
    metrics["peak_rss_bytes"] = stages.peak_rss
    metrics["peak_gpu_bytes"] = stages.peak_gpu
    metrics["cache_hits"] = cache.hits
    metrics["status"] = "complete"

    from .report import write_run_report
    outputs.write_json(out / "fingerprints.json", fps)
    outputs.write_json(out / "env.json", outputs.environment(plan.backend.package_versions(),
                                                             device))
    outputs.write_json(out / "metrics.json", metrics)
    write_run_report(out, metrics, fps)
    log.info("run complete: %s", out)
    outputs.write_manifest(out)


def _evaluate(cfg, model_dir: Path, model_out: Path, tokenizer, tok_fp: str, model_fp: str,
              dtype: str, cache: Cache, fps: Dict[str, Any]) -> Dict[str, Any]:
    from . import evaluate

    e = cfg.eval
    spec = data.TextSpec.from_cfg("eval", e)
    ids = data.token_ids(spec, tokenizer, tok_fp, cache)
    ids_fp = data.rows_fingerprint([ids])
    proto = evaluate.protocol(e, spec.describe(), ids_fp, int(ids.numel()))
    fps["eval_token_ids_sha256"] = ids_fp
    hw = cfg.hardware
    place = dict(device=hw.device, device_map=hw.device_map,
                 max_memory=OmegaConf.to_container(hw.max_memory) if hw.max_memory else None)
    res: Dict[str, Any] = {"protocol": proto}

    if e.baseline:
        # Keyed by what determines the number: weights, protocol (incl. token ids), dtype, and
        # the speed settings, so a sweep evaluates the fp model once, not once per job.
        key = sha256_text(OmegaConf.to_yaml(OmegaConf.create({
            "model": model_fp, "protocol": proto, "dtype": dtype, "device": hw.device,
            "speed": [e.speed, e.speed_prompt_len, e.speed_new_tokens]})))
        base = cache.load_json("baselines", key)
        if base is None:
            fp_model = models.load_causal_lm(model_dir, dtype, **place)
            base = evaluate.perplexity(fp_model, ids, e, "fp")
            base["footprint_bytes"] = evaluate.footprint_bytes(fp_model)
            if e.speed:
                base["speed"] = evaluate.generation_speed(fp_model, ids, e.speed_prompt_len,
                                                          e.speed_new_tokens)
            del fp_model
            cache.save_json("baselines", key, base)
        else:
            log.info("perplexity (fp): %.4f from cache", base["ppl"])
        res["fp"] = base

    # Reload the saved checkpoint exactly as a user would (plain transformers, dtype from the
    # checkpoint): the number in metrics.json is the number a reloaded model gives.
    q_model = models.load_causal_lm(model_out, "auto", **place)
    quant = evaluate.perplexity(q_model, ids, e, "quantized")
    quant["footprint_bytes"] = evaluate.footprint_bytes(q_model)
    if e.speed:
        quant["speed"] = evaluate.generation_speed(q_model, ids, e.speed_prompt_len,
                                                   e.speed_new_tokens)
    res["quantized"] = quant
    if "fp" in res:
        res["delta_ppl"] = quant["ppl"] - res["fp"]["ppl"]
    if e.get("tasks"):  # task accuracy through lm-evaluation-harness (qrecipe/tasks.py)
        from . import tasks
        res["tasks"] = tasks.evaluate_tasks(
            e, cfg.seed, q_model, tokenizer, model_fp, dtype, cache,
            lambda: models.load_causal_lm(model_dir, dtype, **place))
    return res


def _set_threads(hw) -> None:
    n = hw.num_threads or os.cpu_count() or 1
    # gptqmodel sizes its CPU worker pool from this variable; it must be set before its import.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(n))
    import torch
    torch.set_num_threads(n)
