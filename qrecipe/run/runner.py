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
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from qrecipe.backends import QuantizeRequest, QuantizeResult
from qrecipe.boundary.rundir import check_no_symlinks
from qrecipe.errors import QRecipeError
from qrecipe.evaluation import stage as eval_stage
from qrecipe.inputs import models
from qrecipe.inputs.calibration import build as build_calibration
from qrecipe.kernels.table import configure_jit_cache
from qrecipe.plan.compare import run_section
from qrecipe.recipes import frozen
from qrecipe.recipes.hydra_errors import is_config_error, one_line
from qrecipe.recipes.meta import check_expectations, run_overrides
from qrecipe.record import filehash, outputs
from qrecipe.record.cache import Cache
from qrecipe.record.fingerprint import Background, hash_files
from qrecipe.record.recast import ST as RECIPE_DTYPES
from qrecipe.record.recast import recast
from qrecipe.report.run import final_lines, write_run_report
from qrecipe.run import interrupt, resources, rundir
from qrecipe.run import stages as markers
from qrecipe.run.builds import background_builds
from qrecipe.run.dtypes import run_dtype, saved_dtype
from qrecipe.run.gpus import assigned_gpus
from qrecipe.run.interrupt import sigterm_raises
from qrecipe.run.validate import Plan, resolve_paths, settle_backend, validate
from qrecipe.telemetry import overhead
from qrecipe.telemetry.capture import Capture
from qrecipe.telemetry.layerlog import layer_log
from qrecipe.telemetry.monitor import Stages

log = logging.getLogger("qrecipe")


def run_job(cfg: DictConfig, out: Path | None = None, keep_failed_dir: bool = True) -> str:
    """Run one composed config into `out` (Hydra's output dir by default). Returns the status:
    "ok" (also: already complete, nothing to do), "user_error", "crash" or "interrupted"
    (then `interrupt_exit_code` holds the exit code)."""
    if out is None:
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
            if isinstance(e, SystemExit):  # nothing of qrecipe exits inside a job: a library did
                return _crash(job, _library_exit(e, job))
            if not isinstance(e, Exception):
                raise  # GeneratorExit and the like
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


def _library_exit(e: SystemExit, job: _Job) -> RuntimeError:
    """A library's exit() inside a stage, as a crash that names it. auto-round 0.15 logs an
    error and calls exit(-1) on inputs it refuses: without this the process ended with status
    255, no error.json and no word of why."""
    stage = job.stages.current if job.stages else None
    return RuntimeError(f"a library called exit({e.code!r}) during the {stage or 'run'} "
                        "stage; its own messages are in library.log")


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
                                                  "traceback": tb}, root=out)
    except OSError:
        pass  # a full or read-only disk: the message on stderr is all there is


def _run(cfg: DictConfig, out: Path, job: _Job) -> None:
    rundir.check_recipe_name(cfg.recipe_name)
    check_no_symlinks(out)  # a dry run too: it may remove the directory Hydra made
    resolve_paths(cfg)
    settle_backend(cfg)  # before the claim compares the config with a lock it finds
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
                # the libraries' output into library.log; the terminal keeps qrecipe's lines
                with Capture(out, outputs.LIBRARY_LOG):
                    metrics = _pipeline(_Work(cfg, out, plan, stages, cache, model_fp))
            finally:
                model_fp.cancel()  # a failed job stops reading (done: no effect)
        job.done = True
    finally:
        if not cfg.cache.enabled:
            shutil.rmtree(cache.root, ignore_errors=True)
    for line in final_lines(out, metrics, time.perf_counter() - stages.started):
        log.info("%s", line)


@dataclass
class _Work:
    """What the stages of one job share: its config, directory, validated plan, timers, cache,
    the input's background fingerprint, the fingerprints so far, the stages it reused, and the
    evaluation text's tokens on their helper thread."""
    cfg: DictConfig
    out: Path
    plan: Plan
    stages: Stages
    cache: Cache
    model_fp: Background
    dtype: str = ""  # what the job computes in (qrecipe/run/dtypes.py)
    saved: str = ""  # what the checkpoint's unquantized tensors are saved in
    fps: Dict[str, Any] = field(default_factory=dict)
    reused: List[str] = field(default_factory=list)
    eval_tokens: Optional[Background] = None  # the evaluation text, tokenized beside quantize


def _pipeline(w: _Work) -> Dict[str, Any]:
    """load -> calibrate -> quantize -> save -> evaluate -> report (validate ran before);
    returns metrics.json's content."""
    w.dtype, why = run_dtype(w.cfg)
    w.saved = saved_dtype(w.cfg)
    if why:
        log.info("%s", why)  # said once here; metrics.json `dtype` and report.md record it
    # before any gptqmodel import: one build per machine
    jit = Path(configure_jit_cache(w.cache.root)["GPTQMODEL_TORCH_EXTENSIONS_DIR"])
    done = markers.finished_quantize(w.out)
    with background_builds(w.cfg, w.plan, w.dtype, done is None, jit) as builds:
        model_dir, tokenizer, tok_fp = _load(w)
        rows = _calibrate(w, tokenizer, tok_fp, quantizes=done is None)
        if done is None:
            if w.cfg.eval.enabled:  # tokenized while the backend quantizes
                w.eval_tokens = eval_stage.tokens_beside(w.cfg, tokenizer, tok_fp, w.cache)
            result, per_layer = _quantize(w, model_dir, rows)
            _save(w, tokenizer, result, per_layer)
        else:
            result, per_layer = _reuse_quantized(w, done)
        metrics = _metrics(w, result, per_layer, why)
        if w.cfg.eval.enabled:
            _evaluate(w, model_dir, tokenizer, tok_fp, metrics)
        built = builds.finish()
        if built is not None:
            metrics["kernel_builds"] = built
    _report(w, result, metrics)
    return metrics


def _load(w: _Work) -> Tuple[Path, Any, str]:
    """The model's files (a GGUF dequantized once into the cache) and its tokenizer; the
    tokenizer's fingerprint."""
    with w.stages.stage("load"):
        model_dir = models.materialize(w.cfg.model, w.cache.root, w.model_fp.result)
        tokenizer = models.load_tokenizer(model_dir)
        tok_fp = hash_files(p for p in model_dir.iterdir() if p.name.startswith("tokenizer"))
    w.fps["tokenizer_sha256"] = tok_fp  # + the input's, once it is needed
    return model_dir, tokenizer, tok_fp


def _calibrate(w: _Work, tokenizer, tok_fp: str, quantizes: bool):
    """The calibration rows (None for a method that needs none): one source or a weighted
    mix; chat jsonl through the chat template. A job that quantizes imports the backend's
    library while a text the cache does not hold is tokenized on another thread: the import's
    seconds stay the library's (metrics.json `overhead.backend_s`)."""
    if not w.plan.backend.reads_rows(w.cfg.method):
        return None
    with w.stages.stage("calibrate"), resources.oom_guard("calibrate", w.cfg):
        rows, w.fps["calibration"] = build_calibration(
            w.cfg.calibration, tokenizer, tok_fp, w.cache,
            meanwhile=w.plan.backend.imported if quantizes else None)
    return rows


def _quantize(w: _Work, model_dir: Path, rows) -> Tuple[QuantizeResult, list]:
    """The backend quantizes into model.partial/ (_save renames it to model/: model/ exists
    only whole). Per-layer checkpoints (where the backend has them) live in
    .checkpoints/quantize until the stage is marked."""
    cfg, plan, stages = w.cfg, w.plan, w.stages
    markers.clear(w.out, "model", "model.partial", f"{outputs.STAGES}/evaluate.json")
    markers.keep_verified_checkpoints(w.out)  # an earlier attempt's, if its seal says so
    with stages.stage("quantize", memory=True), resources.oom_guard("quantize", cfg), \
            layer_log(plan.backend.name, plan.model.num_layers, stages.gpu_window) as layers, \
            markers.CheckpointSeal(w.out) as seal:
        result = plan.backend.quantize(QuantizeRequest(
            model_dir=model_dir, out_dir=w.out / "model.partial", method=cfg.method,
            bits=cfg.bits.width, group_size=cfg.bits.group_size, device=cfg.hardware.device,
            dtype=w.dtype, calibration=rows, hardware=cfg.hardware, seed=cfg.seed,
            checkpoint_dir=markers.checkpoint_dir(w.out), on_checkpoint=seal.seal))
    return result, layers.rows


def _save(w: _Work, tokenizer, result: QuantizeResult, per_layer: list) -> None:
    """The tokenizer beside the weights, the weights' sha256, model.partial/ -> model/, and the
    quantize marker: a resumed run never quantizes again."""
    stages, partial = w.stages, w.out / "model.partial"
    with stages.stage("save"):
        if w.saved != w.dtype and w.saved in RECIPE_DTYPES:
            with stages.span("recast"):  # the recipe's dtype, whatever the job computed in
                recast(partial, w.saved, root=w.out)
        tokenizer.save_pretrained(partial)
        with stages.span("hash_output"):  # its shards side by side; the manifest reuses it
            w.fps["quantized_weights_sha256"] = markers.weights_sha256(partial)
            vouched = markers.model_files(partial)  # what a resume checks before reusing it
        os.rename(partial, w.out / "model")
        markers.mark(w.out, "quantize", {
            "format": result.format, "details": result.details,
            "quantized_weights_sha256": w.fps["quantized_weights_sha256"],
            "model_files": vouched,
            "seconds": {k: v for k, v in stages.seconds.items() if k == "quantize"},
            "peak_rss": dict(stages.peak_rss), "peak_gpu": dict(stages.peak_gpu),
            "per_layer": per_layer})
    markers.clear(w.out, markers.CHECKPOINTS)


def _reuse_quantized(w: _Work, done: Dict[str, Any]) -> Tuple[QuantizeResult, list]:
    """An earlier attempt saved the quantized model: never quantize it again."""
    log.info("quantize: reusing model/ from an earlier attempt (sha256 %s)",
             done["quantized_weights_sha256"][:16])
    w.fps["quantized_weights_sha256"] = done["quantized_weights_sha256"]
    w.stages.seconds.update(done["seconds"])
    w.stages.peak_rss.update(done["peak_rss"])
    w.stages.peak_gpu.update(done["peak_gpu"])
    w.reused.append("quantize")
    return QuantizeResult(format=done["format"], details=done["details"]), \
        done.get("per_layer", [])


def _metrics(w: _Work, result: QuantizeResult, per_layer: list, why) -> Dict[str, Any]:
    """metrics.json as far as the saved model tells it (evaluate and _report add the rest)."""
    cfg, plan = w.cfg, w.plan
    return {
        "recipe": cfg.recipe_name, "method": cfg.method.name, "backend": plan.backend.name,
        "bits": cfg.bits.width, "group_size": cfg.bits.group_size, "format": result.format,
        "quantize_details": result.details, "model": {
            "source": cfg.model.source, "path": cfg.model.path, "revision": cfg.model.revision,
            "architecture": plan.model.architecture, "layers": plan.model.num_layers},
        "size": {"model_dir_bytes": outputs.dir_size(w.out / "model")},
        "per_layer": per_layer,
        "dtype": {"model": cfg.model.dtype, "hardware": cfg.hardware.get("dtype"),
                  "used": w.dtype, "saved": w.saved, "why": why},
    }


def _evaluate(w: _Work, model_dir: Path, tokenizer, tok_fp: str,
              metrics: Dict[str, Any]) -> None:
    """metrics' eval, size footprints and kernel: scored now, or an earlier attempt's scores of
    the same weights."""
    ev = markers.finished_eval(w.out, w.fps["quantized_weights_sha256"])
    if ev is not None:
        log.info("evaluate: reusing the metrics of an earlier attempt")
        metrics["eval"], w.stages.seconds["evaluate"] = ev["eval"], ev["seconds"]
        w.fps["eval_token_ids_sha256"] = ev["eval_token_ids_sha256"]
        w.reused.append("evaluate")
    else:
        with w.stages.stage("evaluate"):
            # a checkpoint saved in another dtype than the job's is scored in the job's
            metrics["eval"] = eval_stage.run(w.cfg, model_dir, w.out / "model", tokenizer,
                                             tok_fp, w.model_fp.result(), w.dtype, w.cache,
                                             w.fps, w.dtype if w.saved != w.dtype else "auto",
                                             tokens=w.eval_tokens)
        markers.mark(w.out, "evaluate", {
            "eval": metrics["eval"], "seconds": w.stages.seconds["evaluate"],
            "eval_token_ids_sha256": w.fps["eval_token_ids_sha256"],
            "quantized_weights_sha256": w.fps["quantized_weights_sha256"]})
    metrics["eval"] = ev_copy = copy.deepcopy(metrics["eval"])
    metrics["size"]["footprint_bytes"] = ev_copy["quantized"].pop("footprint_bytes")
    metrics["size"]["fp_footprint_bytes"] = (ev_copy.get("fp") or {}).get("footprint_bytes")
    metrics["kernel"] = ev_copy.pop("kernel")


def _report(w: _Work, result: QuantizeResult, metrics: Dict[str, Any]) -> None:
    """The rest of metrics.json, the recipe's expectations, fingerprints.json, env.json,
    report.md, and last the manifest that marks the run complete."""
    out, stages = w.out, w.stages
    w.fps["model_weights_sha256"] = w.model_fp.result()
    metrics.update({
        "time_s": stages.seconds,
        "overhead": overhead.breakdown(stages, result.details, w.reused, w.model_fp),
        "peak_rss_bytes": stages.peak_rss, "peak_gpu_bytes": stages.peak_gpu,
        "cache_hits": w.cache.hits, "status": "complete"})
    if w.reused:
        metrics["resumed"] = {"reused_stages": w.reused}
    # Did the run keep the recipe's promise (meta.expected)? Recorded, never fatal; the final
    # lines say it (report/run.py final_lines).
    metrics["expectations"] = check_expectations(w.cfg.get("meta"), metrics, run_overrides())
    outputs.write_json(out / "fingerprints.json", w.fps, root=out)
    outputs.write_json(out / "env.json", outputs.environment(
        w.plan.backend.package_versions(), w.cfg.hardware.device), root=out)
    outputs.write_json(out / "metrics.json", metrics, root=out)
    write_run_report(out, metrics, w.fps, plan_lines=_plan_lines(out, metrics))
    markers.clear(out, outputs.ERROR)  # an earlier attempt's failure, now resumed
    outputs.write_manifest(out)


def _plan_lines(out: Path, metrics: Dict[str, Any]) -> List[str]:
    """`qrecipe plan`'s table next to what this run measured (qrecipe/plan/compare.py), for the
    report: the report never imports the planner."""
    try:
        return run_section(out, metrics)
    except Exception as e:  # a comparison only: it never fails a finished run
        return [f"(plan not available: {type(e).__name__}: {e})", ""]
