"""One job, in a fixed order: validate -> load -> calibrate -> quantize -> save -> evaluate ->
report. Every stage is timed; the manifest written at the very end marks the run complete.

The runner never lets an exception escape to Hydra: a user error becomes one line and status
"user_error" (exit code 2), a bug becomes a traceback in run.log and status "crash" (exit 1).
In a sweep both leave error.json in the job's directory so the sweep report shows the row.
"""
from __future__ import annotations

import copy
import errno
import logging
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict, List, Tuple

from omegaconf import DictConfig

from qrecipe.backends import QuantizeRequest, QuantizeResult
from qrecipe.errors import QRecipeError
from qrecipe.evaluation import stage as eval_stage
from qrecipe.inputs import models
from qrecipe.recipes import frozen
from qrecipe.record import filehash, outputs
from qrecipe.record.cache import Cache
from qrecipe.record.fingerprint import Background, hash_files
from qrecipe.run import interrupt, resources, rundir
from qrecipe.run import stages as markers
from qrecipe.run.dtypes import run_dtype
from qrecipe.run.gpus import assigned_gpus
from qrecipe.run.interrupt import sigterm_raises
from qrecipe.run.validate import resolve_paths, validate
from qrecipe.telemetry import overhead
from qrecipe.telemetry.layerlog import layer_log
from qrecipe.telemetry.monitor import Stages

log = logging.getLogger("qrecipe")


def run_job(cfg: DictConfig, out: Path | None = None, keep_failed_dir: bool = True) -> str:
    """Run one composed config into `out` (Hydra's output dir by default). Returns the status:
    "ok" (also: already complete, nothing to do), "user_error", "crash" or "interrupted"
    (then `interrupt_exit_code` holds the exit code)."""
    if out is None:
        from hydra.core.hydra_config import HydraConfig
        out = Path(HydraConfig.get().runtime.output_dir)
    out = Path(out)
    # A dry run leaves no directory behind, whatever its outcome.
    keep_failed_dir = keep_failed_dir and not cfg.get("dry_run", False)
    job = _Job(out)
    try:
        with sigterm_raises():
            _run(cfg, out, job)
        return "ok"
    except QRecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        _fail(job, "user_error", str(e), keep_failed_dir)
        return "user_error"
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            return _crash(job, e)
        err = rundir.write_error(e, out)
        print(f"error: {err}", file=sys.stderr)
        _fail(job, "user_error", str(err), True)
        return "user_error"
    except BaseException as e:
        if not interrupt.is_interruption(e):
            if not isinstance(e, Exception):
                raise  # SystemExit and the like
            from qrecipe.recipes.hydra_errors import is_config_error, one_line
            if is_config_error(e):  # e.g. a mandatory value (model.path=???) left unset
                print(f"error: {one_line(e)}", file=sys.stderr)
                _fail(job, "user_error", one_line(e), keep_failed_dir)
                return "user_error"
            return _crash(job, e)
        print(interrupt.message(e, out, job.stages.current if job.stages else None),
              file=sys.stderr)
        _fail(job, "interrupted", f"interrupted by {interrupt.signal_name(e)}", True)
        global interrupt_exit_code
        interrupt_exit_code = interrupt.exit_code(e)
        return "interrupted"
    finally:
        if job.claim is not None:
            job.claim.release(remove_lock=job.done)


#: exit code of the last interrupted run_job (130 SIGINT, 143 SIGTERM).
interrupt_exit_code = 130
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


class _Job:
    """What run_job knows about its directory while it runs."""

    def __init__(self, out: Path):
        self.out = out
        self.claim: rundir.Claim | None = None
        self.stages: Stages | None = None
        self.done = False


def _crash(job: _Job, e: BaseException) -> str:  # a bug: keep everything for the bug report
    log.exception("qrecipe crashed")
    _fail(job, "crash", f"{type(e).__name__}: {e}", True, traceback.format_exc())
    return "crash"


def _fail(job: _Job, status: str, message: str, keep: bool, tb: str | None = None) -> None:
    # Only a directory this run holds (locked, and fresh or its own unfinished run) is touched:
    # another run's result, complete or not, is never written into or removed.
    c = job.claim
    if c is None or c.fd is None or not c.owned:
        return
    out = job.out
    if not keep and c.fresh and not (out / outputs.STAGES).exists():
        # A single run rejected by the user's input leaves nothing behind that could pass for a
        # result (it never wrote anything but Hydra's own .hydra/ and the log). Once a stage has
        # finished (a saved model), the directory stays, incomplete, with error.json.
        shutil.rmtree(out, ignore_errors=True)
        return
    try:
        outputs.write_json(out / outputs.ERROR, {"status": status, "error": message,
                                                  "traceback": tb})
    except OSError:
        pass  # a full or read-only disk: the message on stderr is all there is


def _run(cfg: DictConfig, out: Path, job: _Job) -> None:
    rundir.check_recipe_name(cfg.recipe_name)
    resolve_paths(cfg)
    if cfg.dry_run:  # validation only: writes nothing, claims nothing
        _dry_run(cfg, out, job)
        return
    job.claim = rundir.Claim(out)
    action = job.claim.decide(cfg)
    if action == "skip":
        print(f"already complete: {out} (nothing to do; force=true moves it aside and runs "
              "again)", file=sys.stderr)
        return
    if action == "resume":
        log.info("resuming the unfinished run in %s (%s)", out, job.claim.state.describe())
    # GPUs are taken before anything can initialize CUDA (no-op on CPU).
    with assigned_gpus(cfg.hardware, Path(cfg.cache.dir).expanduser() / "gpu-locks"):
        _run_stages(cfg, out, job)


def _dry_run(cfg: DictConfig, out: Path, job: _Job) -> None:
    fresh = outputs.run_state(out).status in ("absent", "empty")
    try:
        job.stages = Stages()
        with job.stages.stage("validate"):
            plan = validate(cfg)
        print(f"dry run: valid: {cfg.recipe_name}: {cfg.method.name} via {plan.backend.name}, "
              f"w{cfg.bits.width} g{cfg.bits.group_size}", file=sys.stderr)
    finally:
        if fresh:  # Hydra made it; nothing was made in it: leave no run directory
            shutil.rmtree(out, ignore_errors=True)


def _run_stages(cfg: DictConfig, out: Path, job: _Job) -> None:
    stages = job.stages = Stages()
    with stages.stage("validate"):
        plan = validate(cfg)
    log.info("recipe %s: %s via %s, w%d g%d, model %s (%s, %d layers)", cfg.recipe_name,
             cfg.method.name, plan.backend.name, cfg.bits.width, cfg.bits.group_size,
             cfg.model.path, plan.model.architecture, plan.model.num_layers)
    resources.check(cfg, plan.model, out, Path(cfg.cache.dir).expanduser())
    out.mkdir(parents=True, exist_ok=True)
    if not (out / outputs.LOCK).is_file():
        frozen.write_lock(out, cfg)
    # Caching off means nothing is reused, the dequantized GGUF included: the job works in a
    # fresh, private cache that is deleted when it ends.
    cache = Cache(Path(cfg.cache.dir) if cfg.cache.enabled
                  else Path(tempfile.mkdtemp(prefix="qrecipe-nocache-")))
    try:
        with filehash.memo(cache.root / "file-sha256"):  # a big checkpoint is hashed once
            # The input's sha256 is read now, beside the imports and the backend's work; it is
            # first needed after quantizing (GGUF: to materialize).
            model_fp = Background(lambda stop: models.fingerprint(cfg.model, stop), "qrecipe-fp")
            try:
                resources.set_threads(cfg.hardware)
                _pipeline(cfg, out, plan, stages, cache, model_fp)
            finally:
                model_fp.cancel()  # a failed job stops reading (done: no effect)
        job.done = True
    finally:
        if not cfg.cache.enabled:
            shutil.rmtree(cache.root, ignore_errors=True)


def _pipeline(cfg: DictConfig, out: Path, plan, stages: Stages, cache: Cache,
              model_fp: Background) -> None:
    dtype, why = run_dtype(cfg)
    if why:
        log.warning(why)
    device = cfg.hardware.device
    from qrecipe.kernels.table import configure_jit_cache
    configure_jit_cache(cache.root)  # before any gptqmodel import: one build per machine

    with stages.stage("load"):
        model_dir = models.materialize(cfg.model, cache.root, model_fp.result)
        tokenizer = models.load_tokenizer(model_dir)
        tok_fp = hash_files(p for p in model_dir.iterdir() if p.name.startswith("tokenizer"))
    fps: Dict[str, Any] = {"tokenizer_sha256": tok_fp}  # + the input's, once it is needed

    rows = None
    if plan.support.needs_calibration:
        with stages.stage("calibrate"), resources.oom_guard("calibrate", cfg):
            # one source or a weighted mix; chat jsonl through the chat template
            from qrecipe.inputs.calibration import build
            rows, fps["calibration"] = build(cfg.calibration, tokenizer, tok_fp, cache)

    model_out = out / "model"
    reused = []
    done = markers.finished_quantize(out)
    if done is not None:
        # An earlier attempt saved the quantized model: never quantize it again.
        log.info("quantize: reusing model/ from an earlier attempt (sha256 %s)",
                 done["quantized_weights_sha256"][:16])
        result = QuantizeResult(format=done["format"], details=done["details"])
        fps["quantized_weights_sha256"] = done["quantized_weights_sha256"]
        stages.seconds.update(done["seconds"])
        stages.peak_rss.update(done["peak_rss"])
        stages.peak_gpu.update(done["peak_gpu"])
        reused.append("quantize")
        per_layer = done.get("per_layer", [])
    else:
        result, per_layer = _quantize(cfg, out, plan, stages, model_dir, rows, fps, device,
                                      dtype, tokenizer)

    metrics: Dict[str, Any] = {
        "recipe": cfg.recipe_name, "method": cfg.method.name, "backend": plan.backend.name,
        "bits": cfg.bits.width, "group_size": cfg.bits.group_size, "format": result.format,
        "quantize_details": result.details, "model": {
            "source": cfg.model.source, "path": cfg.model.path, "revision": cfg.model.revision,
            "architecture": plan.model.architecture, "layers": plan.model.num_layers},
        "size": {"model_dir_bytes": outputs.dir_size(model_out)},
        "per_layer": per_layer,
        "dtype": {"model": cfg.model.dtype, "hardware": cfg.hardware.get("dtype"),
                  "used": dtype, "why": why},
    }
    if cfg.eval.enabled:
        ev = markers.finished_eval(out, fps["quantized_weights_sha256"])
        if ev is not None:
            log.info("evaluate: reusing the metrics of an earlier attempt")
            metrics["eval"], stages.seconds["evaluate"] = ev["eval"], ev["seconds"]
            fps["eval_token_ids_sha256"] = ev["eval_token_ids_sha256"]
            reused.append("evaluate")
        else:
            with stages.stage("evaluate"):
                metrics["eval"] = eval_stage.run(cfg, model_dir, model_out, tokenizer, tok_fp,
                                                 model_fp.result(), dtype, cache, fps)
            markers.mark(out, "evaluate", {
                "eval": metrics["eval"], "seconds": stages.seconds["evaluate"],
                "eval_token_ids_sha256": fps["eval_token_ids_sha256"],
                "quantized_weights_sha256": fps["quantized_weights_sha256"]})
        metrics["eval"] = copy.deepcopy(metrics["eval"])
        metrics["size"]["footprint_bytes"] = metrics["eval"]["quantized"].pop("footprint_bytes")
        metrics["size"]["fp_footprint_bytes"] = (metrics["eval"].get("fp") or {}).get(
            "footprint_bytes")
        metrics["kernel"] = metrics["eval"].pop("kernel")
    fps["model_weights_sha256"] = model_fp.result()
    metrics["time_s"] = stages.seconds
    metrics["overhead"] = overhead.breakdown(stages, result.details, reused, model_fp)
    metrics["peak_rss_bytes"] = stages.peak_rss
    metrics["peak_gpu_bytes"] = stages.peak_gpu
    metrics["cache_hits"] = cache.hits
    metrics["status"] = "complete"
    if reused:
        metrics["resumed"] = {"reused_stages": reused}
    # Did the run keep the recipe's promise (meta.expected)? Recorded, never fatal.
    from qrecipe.recipes.meta import check_expectations, run_overrides
    metrics["expectations"] = check_expectations(cfg.get("meta"), metrics, run_overrides())
    log.info("recipe expectations: %s", metrics["expectations"]["status"])

    from qrecipe.report.run import write_run_report
    outputs.write_json(out / "fingerprints.json", fps)
    outputs.write_json(out / "env.json", outputs.environment(plan.backend.package_versions(),
                                                             device))
    outputs.write_json(out / "metrics.json", metrics)
    write_run_report(out, metrics, fps, plan_lines=_plan_lines(out, metrics))
    log.info("run complete: %s", out)
    markers.clear(out, outputs.ERROR)  # an earlier attempt's failure, now resumed
    outputs.write_manifest(out)


def _quantize(cfg, out: Path, plan, stages: Stages, model_dir: Path, rows, fps, device: str,
              dtype: str, tokenizer) -> Tuple[QuantizeResult, list]:
    """Quantize into model.partial/, then rename it to model/ and mark the stage done: model/
    exists only whole. Per-layer checkpoints (where the backend has them) live in
    .checkpoints/quantize until the stage is marked."""
    model_out, partial = out / "model", out / "model.partial"
    markers.clear(out, "model", "model.partial", f"{outputs.STAGES}/evaluate.json")
    ckpt = out / ".checkpoints" / "quantize"
    with stages.stage("quantize", memory=True), resources.oom_guard("quantize", cfg), \
            layer_log(plan.backend.name, plan.model.num_layers, stages.gpu_window) as layers:
        result = plan.backend.quantize(QuantizeRequest(
            model_dir=model_dir, out_dir=partial, method=cfg.method, bits=cfg.bits.width,
            group_size=cfg.bits.group_size, device=device, dtype=dtype, calibration=rows,
            hardware=cfg.hardware, seed=cfg.seed, checkpoint_dir=ckpt))
    with stages.stage("save"):
        tokenizer.save_pretrained(partial)
        with stages.span("hash_output"):  # its shards side by side; the manifest reuses it
            fps["quantized_weights_sha256"] = markers.weights_sha256(partial)
        os.rename(partial, model_out)
        markers.mark(out, "quantize", {
            "format": result.format, "details": result.details,
            "quantized_weights_sha256": fps["quantized_weights_sha256"],
            "seconds": {k: v for k, v in stages.seconds.items() if k == "quantize"},
            "peak_rss": dict(stages.peak_rss), "peak_gpu": dict(stages.peak_gpu),
            "per_layer": layers.rows})
    markers.clear(out, ".checkpoints")
    return result, layers.rows


def _plan_lines(out: Path, metrics: Dict[str, Any]) -> List[str]:
    """`qrecipe plan`'s table next to what this run measured (qrecipe/plan/compare.py), for the
    report: the report never imports the planner."""
    try:
        from qrecipe.plan.compare import run_section
        return run_section(out, metrics)
    except Exception as e:  # a comparison only: it never fails a finished run
        return [f"(plan not available: {type(e).__name__}: {e})", ""]
