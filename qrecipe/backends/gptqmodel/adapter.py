"""GPT-QModel adapter: GPTQ, AWQ and RTN (weight-only round-to-nearest) integer quantization.

GPTQ and RTN write a GPTQ v1 checkpoint (AutoGPTQ layout: qweight/qzeros/scales/g_idx, int32
packed, ``quantization_config.quant_method = "gptq"``); AWQ writes an AutoAWQ "gemm" checkpoint.
Plain ``AutoModelForCausalLM.from_pretrained`` loads both on CPU (transformers dispatches to
optimum + gptqmodel, which pick a CPU kernel themselves).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List

from qrecipe.backends.base import (
    BACKENDS,
    SHARD_BYTES,
    Backend,
    MethodSupport,
    QuantizeRequest,
    QuantizeResult,
)
from qrecipe.backends.gptqmodel.collect import collect_after_checkpoints, frozen_heap
from qrecipe.backends.gptqmodel.fastloop import fast_layer_loop
from qrecipe.backends.gptqmodel.hessian import tensor_core_hessian
from qrecipe.backends.gptqmodel.shards import shard_writes
from qrecipe.errors import QRecipeError

log = logging.getLogger(__name__)

# Widths the GPTQ torch packer and the CPU loaders handle; 5-7 bits pack too but no GPU kernel
# or the wider ecosystem reads them.
_BITS = (2, 3, 4, 8)
# gptqmodel's AWQ torch kernel stops at group 128 (its SUPPORTS_GROUP_SIZE). No -1: AWQ is 4-bit
# only, and 4-bit per-channel checkpoints do not run on CPU (see _check_per_channel).
_AWQ_GROUPS = (32, 64, 128)


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
    GPTQ block-update extension (GPTQMODEL_DISABLE_GPTQ_CUDA, read per layer by gptq.py)."""
    hw = req.hardware
    get = (lambda k, d: hw.get(k, d)) if hw is not None else (lambda k, d: d)
    cuda = req.device == "cuda"
    allow_jit = bool(get("allow_jit", False))
    if cuda and not allow_jit:
        os.environ.setdefault("GPTQMODEL_DISABLE_GPTQ_CUDA", "1")
    return {"batch_size": max(1, int(get("calib_batch_size", 1))),
            "offload_to_disk": bool(get("offload_to_disk", True)),
            "stream_activations": bool(get("stream_activations", True)),
            "pack_impl": "gpu" if cuda else "cpu",
            "tensor_core_hessian": cuda and bool(get("tensor_core_hessian", False)),
            "fast_layer_loop": cuda and bool(get("fast_layer_loop", False)),
            "block_update": cuda and os.environ.get("GPTQMODEL_DISABLE_GPTQ_CUDA") != "1"}


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


@BACKENDS.register("gptqmodel")
class GPTQModelBackend(Backend):
    name = "gptqmodel"
    requires = (("gptqmodel", "gptqmodel==7.6.0"), ("optimum", "optimum==2.3.0"))
    support = {
        "gptq": MethodSupport(bits=_BITS, note="GPTQ (group-aware reordering unless desc_act), "
                                               "gptq v1 checkpoint"),
        "awq": MethodSupport(bits=(4,), group_sizes=_AWQ_GROUPS,
                             note="AWQ gemm checkpoint; on CPU: torch kernel and bf16 weights"),
        "rtn": MethodSupport(bits=_BITS, needs_calibration=False,
                             note="gptqmodel weight-only RTN (min/max), gptq v1 checkpoint"),
    }

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

    def quantize(self, req: QuantizeRequest) -> QuantizeResult:
        self.check_installed()
        m = req.method
        if m.name not in self.support:
            raise QRecipeError("method not provided by this backend", key="method.name",
                               value=m.name, allowed=sorted(self.support))
        needs_rows = self.support[m.name].needs_calibration
        if needs_rows and not req.calibration:
            raise QRecipeError(f"{m.name} needs calibration data",
                               key="calibration.num_samples", value=0)
        self.preflight(m.name, req.bits, req.group_size, req.device)
        _set_env()
        hw = _speed(req)
        t_import = time.perf_counter()  # 0 when already imported (a sweep's later jobs)
        import gptqmodel  # noqa: F401 - the library's import: its own seconds (backend_s)
        t_import = time.perf_counter() - t_import
        with frozen_heap():  # every full collection inside scans only what the call creates
            return self._run(req, hw, needs_rows, t_import)

    def _run(self, req: QuantizeRequest, hw: Dict[str, Any], needs_rows: bool,
             t_import: float) -> QuantizeResult:
        """Load, quantize and save with gptqmodel (imported by quantize()); the details."""
        import torch
        from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
        m = req.method
        if req.device == "cuda" and not torch.cuda.is_available():
            raise QRecipeError("no CUDA device is visible", key="hardware.device",
                               value=req.device, allowed="cpu")
        _seed(req.seed)

        dtype = req.dtype
        common = dict(bits=req.bits, group_size=req.group_size)
        if m.name == "gptq":
            qcfg = QuantizeConfig(**common, sym=bool(m.sym), desc_act=bool(m.desc_act),
                                  damp_percent=float(m.damp_percent),
                                  true_sequential=bool(m.true_sequential),
                                  # gptqmodel's group-aware reordering (GAR) is its default with
                                  # desc_act off; it keeps g_idx sequential (plain v1 layout).
                                  # Said explicitly so desc_act=True does not log a warning.
                                  act_group_aware=not bool(m.desc_act))
            # The kernel here only packs the int weights (the layout on disk is the same for
            # every GPTQ kernel); torch needs no compiled extension, and AUTO on a Hopper GPU may
            # pick Machete, which downloads CUTLASS (fails offline).
            backend = BACKEND.GPTQ_TORCH
        elif m.name == "awq":
            qcfg = QuantizeConfig(**common, method="awq", format="gemm",
                                  sym=not bool(m.zero_point),
                                  scale_search_chunked_activations=hw["stream_activations"])
            # AUTO picks AWQ_GEMM, CUDA-only ("AWQ: CUDA is not available" on CPU); the torch
            # kernel packs the same gemm layout on any device.
            backend = BACKEND.AWQ_TORCH
            # The AWQ kernels refuse fp32 (fp16/bf16 only). On CPU fp16 matmuls have no fast
            # path (~100x slower than bf16 on x86), so bf16; on GPU a requested half is kept.
            if req.device == "cpu" or dtype not in ("float16", "bfloat16"):
                dtype = "bfloat16"
        else:  # rtn
            # weight_only={"method": "rtn"} makes QuantizeConfig an RTNConfig: the weight-only
            # lifecycle (no forward pass, no data), exported in the gptq v1 layout.
            qcfg = QuantizeConfig(**common, sym=bool(m.sym), weight_only={"method": "rtn"})
            backend = BACKEND.GPTQ_TORCH
        qcfg.offload_to_disk = hw["offload_to_disk"]
        qcfg.pack_impl = hw["pack_impl"]
        if dtype != req.dtype:
            log.info("gptqmodel: %s on %s loads the model in %s (asked %s)", m.name, req.device,
                     dtype, req.dtype)

        t0 = time.perf_counter()
        log.info("gptqmodel: loading %s (%s, %s)", req.model_dir, req.device, dtype)
        model = GPTQModel.load(str(req.model_dir), qcfg, device=req.device,
                               dtype=getattr(torch, dtype))
        t1 = time.perf_counter()
        rows = _rows(req.calibration) if needs_rows else None
        log.info("gptqmodel: %s w%d g%d on %s%s", m.name, req.bits, req.group_size, req.device,
                 f", {len(rows)} calibration rows" if rows else ", no calibration data")
        ckpt = _layer_checkpoint(model, req)
        # Measured (bytes and time) for GPTQ on one GPU: gptqmodel spreads a layer's modules over
        # every visible GPU, which is untested here; a resumable run keeps its own placement.
        fast_loop = (hw["fast_layer_loop"] and m.name == "gptq" and ckpt is None
                     and torch.cuda.device_count() == 1)
        if fast_loop:  # the layer inputs stay on the GPU (gptqmodel_fastloop.py)
            from gptqmodel.utils.looper_helpers import _canonical_device
            model.quantize_config.calibration_data_device = _canonical_device(
                torch.device("cuda", torch.cuda.current_device()))
        # Rows are unpadded and equal-length, so a batch > 1 only changes the float summation
        # order of the Hessians; calibration_sort=None keeps the runner's (seeded) row order.
        # Each checkpoint commit leaves a reference cycle, collected (gptqmodel_gc.py).
        try:
            with collect_after_checkpoints() as gc_seconds, fast_layer_loop(fast_loop), \
                    tensor_core_hessian(hw["tensor_core_hessian"] and m.name == "gptq"):
                model.quantize(rows, batch_size=hw["batch_size"], backend=backend,
                               calibration_sort=None, **({"checkpoint": ckpt} if ckpt else {}))
        except Exception as e:
            if type(e).__name__ not in ("CheckpointError", "CheckpointCorrupt"):
                raise  # CheckpointStopped (a signal, committed) is an interruption: the runner's
            import shutil
            shutil.rmtree(req.checkpoint_dir, ignore_errors=True)
            raise QRecipeError(f"the per-layer checkpoint could not be used ({e}); it was "
                               "removed", key="checkpoint", value=str(req.checkpoint_dir),
                               hint="run qrecipe resume again: quantization starts over") from None
        t2 = time.perf_counter()
        req.out_dir.mkdir(parents=True, exist_ok=True)
        with shard_writes(bool(ckpt)) as shard_hashes:  # hashed as written, by qrecipe
            model.save(str(req.out_dir), max_shard_size=SHARD_BYTES)
        t3 = time.perf_counter()
        shard_hashes.wait()  # what hashing is left once gptqmodel's write has ended
        t4 = time.perf_counter()
        if ckpt:
            # A run resumed from a layer checkpoint saves its tensors in another order: the
            # canonical layout gives it the uninterrupted run's bytes (qrecipe/record/canonical.py).
            # Saved in that order already, a file is only checked (its header); anything else
            # is rewritten. qrecipe's own work: timed apart (metrics.json `overhead`).
            from qrecipe.record.canonical import canonicalize
            canonicalize(req.out_dir)
        t5 = time.perf_counter()
        log.info("gptqmodel: saved %s (import %.1fs, load %.1fs, quantize %.1fs, save %.1fs)",
                 req.out_dir, t_import, t1 - t0, t2 - t1, t3 - t2)

        q = model.quantize_config
        details: Dict[str, Any] = {
            "api": "GPTQModel.load(model_dir, QuantizeConfig(...)).quantize(rows)"
                   f".save(out_dir, max_shard_size={SHARD_BYTES})",
            "config_class": type(q).__name__,
            "checkpoint_format": str(getattr(q.format, "value", q.format)),
            "bits": req.bits, "group_size": req.group_size, "sym": bool(q.sym),
            "desc_act": bool(q.desc_act), "device": req.device, "dtype": dtype,
            "requested_dtype": req.dtype,
            "pack_backend": backend.value,
            "pack_kernel": getattr(getattr(model, "qlinear_kernel", None), "__name__", None),
            "layer_checkpoints": bool(ckpt),
            "checkpoint_gc_seconds": round(sum(gc_seconds), 2),
            "calibration_rows": len(rows) if rows else 0,
            "calibration_seq_len": len(rows[0]["input_ids"]) if rows else 0,
            "cpu_workers": int(os.environ["GPTQMODEL_CPU_WORKERS"]),
            "calib_batch_size": hw["batch_size"], "pack_impl": q.pack_impl,
            "offload_to_disk": bool(q.offload_to_disk),
            "gptq_cuda_block_update": hw["block_update"],
            # the library's own time (what a script calling it directly spends too)
            "seconds": {"import": round(t_import, 2), "load": round(t1 - t0, 2),
                        "quantize": round(t2 - t1, 2), "save": round(t3 - t2, 2)},
            "qrecipe_seconds": {"shard_sha256_wait": round(t4 - t3, 2),
                                "canonicalize": round(t5 - t4, 2)},
            "versions": self.package_versions(),
        }
        if m.name == "gptq":
            details.update(damp_percent=q.damp_percent, true_sequential=q.true_sequential,
                           act_group_aware=q.act_group_aware,
                           tensor_core_hessian=hw["tensor_core_hessian"],
                           fast_layer_loop=fast_loop,
                           damp_auto_increment=q.damp_auto_increment,
                           # modules seeing < threshold of the tokens (MoE experts) fall back to
                           # RTN; never triggers on a dense model.
                           fallback=(f"{q.fallback.strategy.value}<{q.fallback.threshold}"
                                     if q.fallback else None))
        if m.name == "awq":
            details.update(zero_point=not q.sym,
                           stream_activations=bool(q.scale_search_chunked_activations))
        del model
        import gc
        gc.collect()
        if req.device == "cuda":
            torch.cuda.empty_cache()
        return QuantizeResult(format="awq" if m.name == "awq" else "gptq", details=details)
