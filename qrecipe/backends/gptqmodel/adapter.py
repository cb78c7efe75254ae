"""GPT-QModel adapter: GPTQ, AWQ and RTN (weight-only round-to-nearest) integer quantization.

GPTQ and RTN write a GPTQ v1 checkpoint (AutoGPTQ layout: qweight/qzeros/scales/g_idx, int32
packed, ``quantization_config.quant_method = "gptq"``); AWQ writes an AutoAWQ "gemm" checkpoint.
Plain ``AutoModelForCausalLM.from_pretrained`` loads both on CPU (transformers dispatches to
optimum + gptqmodel, which pick a CPU kernel themselves).
"""
from __future__ import annotations

import gc
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from qrecipe.backends.base import (
    BACKENDS,
    SHARD_BYTES,
    TRANSFORMERS,
    Backend,
    QuantizeRequest,
    QuantizeResult,
)
from qrecipe.backends.capabilities import CAPABILITIES
from qrecipe.backends.gptqmodel import layerhooks, patches
from qrecipe.backends.gptqmodel.ckptstore import Checked, verify_once
from qrecipe.backends.gptqmodel.collect import (CheckpointSeconds, collect_after_checkpoints,
                                                frozen_heap)
from qrecipe.backends.gptqmodel.rope import per_layer_rope
from qrecipe.backends.gptqmodel.fastloop import fast_layer_loop
from qrecipe.backends.gptqmodel.hessian import tensor_core_hessian
from qrecipe.backends.gptqmodel.shards import shard_writes
from qrecipe.environ import env_set
from qrecipe.errors import QRecipeError
from qrecipe.record.canonical import canonicalize
from qrecipe.telemetry import layerlog

log = logging.getLogger(__name__)


def _set_env() -> None:
    """Environment gptqmodel reads once, at import / first thread-pool use."""
    # gptqmodel defaults to (cores+1)//2 CPU workers, i.e. 1 on a 2-core box, and then refuses
    # to start ("Virtual pool 'model_loader:cpu' requests 2 workers but parent 'cpu' only has
    # 1"); never go below 2. An explicit user value wins.
    n = min(12, max(2, ((os.cpu_count() or 1) + 1) // 2))
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(n))


def _speed(req: QuantizeRequest) -> Dict[str, Any]:
    """Speed settings from hardware.* (none changes the packed bytes; batch only the summation
    order). On CUDA: pack on the GPU in plain torch (the default "cpu" packer is a C++ extension
    built with a compiler on first use), and without hardware.allow_jit also skip the nvcc-built
    GPTQ block-update extension (NO_BLOCK_UPDATE while quantizing: _block_update)."""
    hw = req.hardware
    get = (lambda k, d: hw.get(k, d)) if hw is not None else (lambda k, d: d)
    cuda = req.device == "cuda"
    allow_jit = bool(get("allow_jit", False))
    return {"batch_size": max(1, int(get("calib_batch_size", 1))),
            "offload_to_disk": bool(get("offload_to_disk", True)),
            "stream_activations": bool(get("stream_activations", True)),
            "pack_impl": "gpu" if cuda else "cpu",
            "tensor_core_hessian": cuda and bool(get("tensor_core_hessian", False)),
            "fast_layer_loop": cuda and bool(get("fast_layer_loop", False)),
            "block_update": cuda and allow_jit and os.environ.get(NO_BLOCK_UPDATE) != "1"}


# gptqmodel's gptq.py reads this flag at every layer: set only while a job without the block
# update quantizes. A value left in os.environ outlived the job: the next job of the process (a
# sweep's, a test's) ran without its block update though its profile allowed the build.
NO_BLOCK_UPDATE = "GPTQMODEL_DISABLE_GPTQ_CUDA"


def _block_update(on: bool):
    """GPTQ's nvcc-built block update on or off for the block, the environment as it was after."""
    return env_set(NO_BLOCK_UPDATE, None if on else "1")


def _seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    # GPTQ/AWQ/RTN are deterministic given the rows; seeding only pins any library sampling.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rows(calibration: List[Any]) -> List[Dict[str, Any]]:
    # gptqmodel takes dicts of token ids; rows are unpadded fixed-length, so the mask is all ones.
    out = []
    for r in calibration:
        ids = r.reshape(-1).long().cpu()
        out.append({"input_ids": ids.tolist(), "attention_mask": [1] * ids.numel()})
    return out


def _layer_checkpoint(model, req: QuantizeRequest):
    """gptqmodel 7.6's per-layer checkpoints (CheckpointConfig): after every decoder layer it
    commits the quantized layer and the next layer's inputs under req.checkpoint_dir, and a
    later quantize() with the same identity continues from the last committed layer. It covers
    llama/qwen3_moe models quantized sequentially with disk offload (its own
    validate_checkpoint_support says which); anything else runs without, and an interrupted
    quantization then starts over (the runner still skips every finished stage)."""
    if req.checkpoint_dir is None:
        return None
    try:
        from gptqmodel import CheckpointConfig
        from gptqmodel.looper.gptq_checkpoint import validate_checkpoint_support
        validate_checkpoint_support(model)
    except (ImportError, NotImplementedError, ValueError) as e:
        log.info("gptqmodel: no per-layer checkpoints for this run (%s)", e)
        return None
    log.info("gptqmodel: per-layer checkpoints in %s", req.checkpoint_dir)
    return CheckpointConfig(path=str(req.checkpoint_dir), resume="auto")


# Architectures gptqmodel's AWQ cannot quantize (check_model says why).
AWQ_UNSUPPORTED = ("Gemma3",)


@BACKENDS.register("gptqmodel")
class GPTQModelBackend(Backend):
    name = "gptqmodel"
    requires = (("gptqmodel", "gptqmodel==7.6.0"), ("optimum", "optimum==2.3.0"))
    support = CAPABILITIES["gptqmodel"]
    versions = (patches.GPTQMODEL, TRANSFORMERS)
    patch_sets = patches.ALL

    def check_model(self, method: Any, info: Any) -> None:
        # gptqmodel 7.6's AWQ scale search calls each layer's rotary embedding without the
        # layer_type that Gemma 3's takes (sliding and full attention have their own RoPE): a
        # TypeError in its worker thread, on which gptqmodel ends the process (os._exit(1), no
        # record). Measured on Gemma 3 270M; llm-compressor's AWQ maps Gemma 3 itself.
        if method.name == "awq" and str(info.architecture).startswith(AWQ_UNSUPPORTED):
            raise QRecipeError(
                f"gptqmodel 7.6's AWQ cannot run {info.architecture}'s per-layer rotary "
                "embedding (its scale search ends the process at the first layer)",
                key="method.backend", value="gptqmodel",
                hint="method.backend=llmcompressor (AWQ's default) maps Gemma 3")

    def preflight(self, method: str, bits: int, group_size: int, device: str) -> None:
        # gptqmodel 7.6's loader (used by transformers) picks a torch int4pack kernel for 4-bit on
        # CPU whose op accepts groups of 32..256 only, so a per-channel w4 checkpoint loads but its
        # first forward fails ("expect qGroupSize to be 32, 64, 128 or 256"). Other widths use a
        # plain dequantizing kernel and work.
        if bits == 4 and group_size == -1:
            if device == "cpu":
                raise QRecipeError("4-bit per-channel gptqmodel checkpoints do not run on CPU",
                                   key="bits.group_size", value=-1,
                                   hint="use group_size 32/64/128, or backend llmcompressor")
            log.warning("gptqmodel: a w4 per-channel checkpoint runs on GPU only, not on CPU")

    def library_import(self) -> None:
        _set_env()
        import gptqmodel  # noqa: F401 - the library's import: its own seconds (backend_s)

    def run(self, req: QuantizeRequest) -> QuantizeResult:
        needs_rows = self.support[req.method.name].needs_calibration
        job = _Job(req, _speed(req), versions=self.package_versions(),
                   rows=_rows(req.calibration) if needs_rows else None)
        job.seconds["import"] = self.imported()  # 0 in a sweep's later jobs
        # frozen_heap: every full collection inside scans only what the call creates;
        # per_layer_rope: a Gemma 3 config survives gptqmodel's load and save (rope.py)
        with frozen_heap(), per_layer_rope():
            _translate(job)
            model = _load(job)
            _quantize(job, model)
            _save(job, model)
            details = _describe(job, model)
            del model
            _free_memory(req.device)
        return QuantizeResult(format=self.support[req.method.name].format, details=details)


# per-layer lines while it quantizes, from gptqmodel's own events (layerhooks.py)
layerlog.register(GPTQModelBackend.name, "gptqmodel", layerhooks.install)


@dataclass
class _Job:
    """One quantize() call as it goes: the request, then what each step decided."""
    req: QuantizeRequest
    hw: Dict[str, Any]  # _speed()
    versions: Dict[str, str]
    rows: Optional[List[Dict[str, Any]]]  # gptqmodel's calibration rows (None: RTN)
    seconds: Dict[str, float] = field(default_factory=dict)  # the library's own steps
    qrecipe_seconds: Dict[str, float] = field(default_factory=dict)  # qrecipe's own work
    qcfg: Any = None  # QuantizeConfig
    backend: Any = None  # the BACKEND that packs
    dtype: str = ""  # what the model is loaded in (AWQ may change the request's)
    ckpt: Any = None  # CheckpointConfig, or None
    fast_loop: bool = False
    tensor_core_hessian: bool = False
    ckpt_seconds: CheckpointSeconds = field(default_factory=CheckpointSeconds)
    ckpt_checked: Checked = field(default_factory=Checked)


def _translate(job: _Job) -> None:
    """The request in gptqmodel's terms: QuantizeConfig, the packing BACKEND, the load dtype."""
    from gptqmodel import BACKEND, QuantizeConfig
    req, m = job.req, job.req.method
    common = dict(bits=req.bits, group_size=req.group_size)
    job.dtype = req.dtype
    if m.name == "gptq":
        job.qcfg = QuantizeConfig(**common, sym=bool(m.sym), desc_act=bool(m.desc_act),
                                  damp_percent=float(m.damp_percent),
                                  true_sequential=bool(m.true_sequential),
                                  # gptqmodel's group-aware reordering (GAR) is its default with
                                  # desc_act off; it keeps g_idx sequential (plain v1 layout).
                                  # Said explicitly so desc_act=True does not log a warning.
                                  act_group_aware=not bool(m.desc_act))
        # The kernel here only packs the int weights (the layout on disk is the same for
        # every GPTQ kernel); torch needs no compiled extension, and AUTO on a Hopper GPU may
        # pick Machete, which downloads CUTLASS (fails offline).
        job.backend = BACKEND.GPTQ_TORCH
    elif m.name == "awq":
        job.qcfg = QuantizeConfig(**common, method="awq", format="gemm",
                                  sym=not bool(m.zero_point),
                                  scale_search_chunked_activations=job.hw["stream_activations"])
        # AUTO picks AWQ_GEMM, CUDA-only ("AWQ: CUDA is not available" on CPU); the torch
        # kernel packs the same gemm layout on any device.
        job.backend = BACKEND.AWQ_TORCH
        # The AWQ kernels refuse fp32 (fp16/bf16 only). On CPU fp16 matmuls have no fast
        # path (~100x slower than bf16 on x86), so bf16; on GPU a requested half is kept.
        if req.device == "cpu" or job.dtype not in ("float16", "bfloat16"):
            job.dtype = "bfloat16"
    else:  # rtn
        # weight_only={"method": "rtn"} makes QuantizeConfig an RTNConfig: the weight-only
        # lifecycle (no forward pass, no data), exported in the gptq v1 layout.
        job.qcfg = QuantizeConfig(**common, sym=bool(m.sym), weight_only={"method": "rtn"})
        job.backend = BACKEND.GPTQ_TORCH
    job.qcfg.offload_to_disk = job.hw["offload_to_disk"]
    job.qcfg.pack_impl = job.hw["pack_impl"]
    if job.dtype != req.dtype:
        log.info("gptqmodel: %s on %s loads the model in %s (asked %s)", m.name, req.device,
                 job.dtype, req.dtype)


def _load(job: _Job):
    import torch
    from gptqmodel import GPTQModel
    req = job.req
    _seed(req.seed)
    t0 = time.perf_counter()
    log.info("gptqmodel: loading %s (%s, %s)", req.model_dir, req.device, job.dtype)
    model = GPTQModel.load(str(req.model_dir), job.qcfg, device=req.device,
                           dtype=getattr(torch, job.dtype))
    job.seconds["load"] = time.perf_counter() - t0
    return model


def _quantize(job: _Job, model) -> None:
    """model.quantize(rows) with qrecipe's checkpoints, collections and speed patches."""
    req, hw, rows = job.req, job.hw, job.rows
    t0 = time.perf_counter()
    log.info("gptqmodel: %s w%d g%d on %s%s", req.method.name, req.bits, req.group_size,
             req.device, f", {len(rows)} calibration rows" if rows else ", no calibration data")
    job.ckpt = _layer_checkpoint(model, req)
    fast_loop = _keep_inputs_on_gpu(job, model)
    # Rows are unpadded and equal-length, so a batch > 1 only changes the float summation
    # order of the Hessians; calibration_sort=None keeps the runner's (seeded) row order.
    # Each checkpoint commit leaves a reference cycle, collected (collect.py).
    try:
        with _block_update(hw["block_update"]), \
                collect_after_checkpoints(req.on_checkpoint) as job.ckpt_seconds, \
                verify_once(job.ckpt is not None) as job.ckpt_checked, \
                fast_layer_loop(fast_loop) as job.fast_loop, \
                tensor_core_hessian(hw["tensor_core_hessian"] and req.method.name == "gptq") \
                as job.tensor_core_hessian:
            model.quantize(rows, batch_size=hw["batch_size"], backend=job.backend,
                           calibration_sort=None,
                           **({"checkpoint": job.ckpt} if job.ckpt else {}))
    except Exception as e:
        if type(e).__name__ not in ("CheckpointError", "CheckpointCorrupt"):
            raise  # CheckpointStopped (a signal, committed) is an interruption: the runner's
        shutil.rmtree(req.checkpoint_dir, ignore_errors=True)
        raise QRecipeError(f"the per-layer checkpoint could not be used ({e}); it was "
                           "removed", key="checkpoint", value=str(req.checkpoint_dir),
                           hint="run qrecipe resume again: quantization starts over") from None
    job.seconds["quantize"] = time.perf_counter() - t0


def _keep_inputs_on_gpu(job: _Job, model) -> bool:
    """hardware.fast_layer_loop: the layer inputs stay on the GPU (fastloop.py). Measured (bytes
    and time) for GPTQ on one GPU: gptqmodel spreads a layer's modules over every visible GPU,
    which is untested here; a resumable run keeps its own placement."""
    import torch
    on = (job.hw["fast_layer_loop"] and job.req.method.name == "gptq" and job.ckpt is None
          and torch.cuda.device_count() == 1)
    if on:
        from gptqmodel.utils.looper_helpers import _canonical_device
        model.quantize_config.calibration_data_device = _canonical_device(
            torch.device("cuda", torch.cuda.current_device()))
    return on


def _save(job: _Job, model) -> None:
    """model.save, each shard hashed as gptqmodel writes it; a resumed run's files in the
    uninterrupted run's layout."""
    req = job.req
    t0 = time.perf_counter()
    req.out_dir.mkdir(parents=True, exist_ok=True)
    with shard_writes(bool(job.ckpt)) as shard_hashes:  # hashed as written, by qrecipe
        model.save(str(req.out_dir), max_shard_size=SHARD_BYTES)
    t1 = time.perf_counter()
    shard_hashes.wait()  # what hashing is left once gptqmodel's write has ended
    t2 = time.perf_counter()
    if job.ckpt:
        # A run resumed from a layer checkpoint saves its tensors in another order: the
        # canonical layout gives it the uninterrupted run's bytes (qrecipe/record/canonical.py).
        # Saved in that order already, a file is only checked (its header); anything else
        # is rewritten. qrecipe's own work: timed apart (metrics.json `overhead`).
        canonicalize(req.out_dir)
    job.seconds["save"] = t1 - t0
    job.qrecipe_seconds.update(shard_sha256_wait=t2 - t1, canonicalize=time.perf_counter() - t2)
    s = job.seconds
    log.info("gptqmodel: saved %s (import %.1fs, load %.1fs, quantize %.1fs, save %.1fs)",
             req.out_dir, s["import"], s["load"], s["quantize"], s["save"])


def _describe(job: _Job, model) -> Dict[str, Any]:
    """Effective settings, read back from gptqmodel's config where it holds them."""
    req, hw, rows, q = job.req, job.hw, job.rows, model.quantize_config
    details: Dict[str, Any] = {
        "api": "GPTQModel.load(model_dir, QuantizeConfig(...)).quantize(rows)"
               f".save(out_dir, max_shard_size={SHARD_BYTES})",
        "config_class": type(q).__name__,
        "checkpoint_format": str(getattr(q.format, "value", q.format)),
        "bits": req.bits, "group_size": req.group_size, "sym": bool(q.sym),
        "desc_act": bool(q.desc_act), "device": req.device, "dtype": job.dtype,
        "requested_dtype": req.dtype,
        "pack_backend": job.backend.value,
        "pack_kernel": getattr(getattr(model, "qlinear_kernel", None), "__name__", None),
        "layer_checkpoints": bool(job.ckpt),
        # gptqmodel's checkpoint calls (capture, write, commit), the collection after each
        "checkpoint_seconds": {"calls": round(sum(job.ckpt_seconds.calls), 2),
                               "collections": round(sum(job.ckpt_seconds.collections), 2)},
        # bytes of checkpoint objects read back to check their sha256, and those not read again
        "checkpoint_verify_bytes": {"hashed": job.ckpt_checked.hashed_bytes,
                                    "not_reread": job.ckpt_checked.skipped_bytes},
        "calibration_rows": len(rows) if rows else 0,
        "calibration_seq_len": len(rows[0]["input_ids"]) if rows else 0,
        "cpu_workers": int(os.environ["GPTQMODEL_CPU_WORKERS"]),
        "calib_batch_size": hw["batch_size"], "pack_impl": q.pack_impl,
        "offload_to_disk": bool(q.offload_to_disk),
        "gptq_cuda_block_update": hw["block_update"],
        # the library's own time (what a script calling it directly spends too)
        "seconds": {k: round(job.seconds[k], 2) for k in ("import", "load", "quantize", "save")},
        "qrecipe_seconds": {k: round(v, 2) for k, v in job.qrecipe_seconds.items()},
        "versions": job.versions,
    }
    if req.method.name == "gptq":
        details.update(damp_percent=q.damp_percent, true_sequential=q.true_sequential,
                       act_group_aware=q.act_group_aware,
                       tensor_core_hessian=job.tensor_core_hessian,
                       fast_layer_loop=job.fast_loop,
                       damp_auto_increment=q.damp_auto_increment,
                       # modules seeing < threshold of the tokens (MoE experts) fall back to
                       # RTN; never triggers on a dense model.
                       fallback=(f"{q.fallback.strategy.value}<{q.fallback.threshold}"
                                 if q.fallback else None))
    if req.method.name == "awq":
        details.update(zero_point=not q.sym,
                       stream_activations=bool(q.scale_search_chunked_activations))
    return details


def _free_memory(device: str) -> None:
    """What the quantized model held, back before the runner's next stage."""
    gc.collect()
    if device == "cuda":
        import torch
        torch.cuda.empty_cache()
