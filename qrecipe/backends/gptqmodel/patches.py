"""Every gptqmodel function qrecipe replaces, in one place: owner, name and the sha256 of the
upstream source at the pinned 7.6.0 (tests/test_patches.py checks the installed library still
has it). The replacements live next to what they serve (fastloop, hessian, collect, ckptstore,
shards, layerhooks) and go through backends.patching.guarded. None of these changes a result:
each only moves bytes sooner, frees memory, hashes a file once or while it is written, or logs
a layer, so on another gptqmodel they are skipped (one warning line) and gptqmodel's own code runs.
"""
from __future__ import annotations

from qrecipe.backends.patching import Patch, PatchSet, Supported

GPTQMODEL = Supported("gptqmodel", "7.6")

_QUANTIZER = "gptqmodel.quantization.quantizer:Quantizer"

FAST_LAYER_LOOP = PatchSet(
    GPTQMODEL, "the fast GPTQ layer loop (hardware.fast_layer_loop)", "slower on the GPU",
    (Patch("gptqmodel.models.base:BaseQModel", "post_quantize", "feed322635c2f8ef"),
     Patch("gptqmodel.nn_modules.qlinear:PackableQuantLinear", "pack_gpu", "c686dea8ae6e53a6"),
     Patch(_QUANTIZER, "configure", "43157d474800a764"),
     Patch(_QUANTIZER, "find_params", "1d735c3e4033f8ef")),
    methods=("gptq",))

TENSOR_CORE_HESSIAN = PatchSet(
    GPTQMODEL, "tensor-core Hessians (hardware.tensor_core_hessian)", "slower on the GPU",
    (Patch("gptqmodel.quantization.gptq:GPTQ", "compute_hessian_xtx", "7afd192b6dde318a"),),
    methods=("gptq",))

CHECKPOINT_GC = PatchSet(
    GPTQMODEL, "a collection after each layer checkpoint",
    "host RAM grows by one layer's inputs per checkpointed layer",
    (Patch("gptqmodel.looper.checkpoint:CheckpointExtension", "on_start", "32cbb88566c2aff9"),
     Patch("gptqmodel.looper.checkpoint:CheckpointExtension", "on_boundary",
           "c43f4258e9936936")))

_STORE = "gptqmodel.looper.checkpoint_store:CheckpointStore"

CHECKPOINT_VERIFY = PatchSet(
    GPTQMODEL, "each layer-checkpoint object hashed once",
    "every commit reads back and hashes all the layers checkpointed so far",
    (Patch(_STORE, "object_path", "048f1fa4d9f7aa89"),
     Patch(_STORE, "put", "08d0ced474f0b967"),
     Patch(_STORE, "put_file", "6b504d44d4fd60a6"),
     Patch(_STORE, "_manifest", "f937bfaf964da23d"),
     Patch(_STORE, "commit", "5c4749da394c22b1")))

SHARD_WRITES = PatchSet(
    GPTQMODEL, "hashing each shard while it is written",
    "the save stage reads every shard again; a resumed run's shards are reordered afterwards",
    (Patch("gptqmodel.utils.model", "_write_shard_file", "55eb917b07f079e8"),
     Patch("gptqmodel.utils.model", "_plan_shards", "a672f3585a7659b5")))

LAYER_EVENTS = PatchSet(
    GPTQMODEL, "per-layer progress", "no per-layer lines in run.log and metrics.json",
    (Patch("gptqmodel.looper.module_looper:ModuleLooper", "_resolve_layer_callback",
           "eeec11b9038f773d"),
     Patch("gptqmodel.looper.module_looper:ModuleLooper", "_resolve_subset_callback",
           "8b6eecb42cf9b672"),
     Patch("gptqmodel.looper.extension:LoopExtensions", "publish", "df8401516a7ca6c6"),
     Patch("gptqmodel.looper.extension:LoopExtensions", "start", "3d4be1aeaffc3201")))

PER_LAYER_ROPE = PatchSet(
    GPTQMODEL, "per-layer-type RoPE configs kept as they are (Gemma 3)",
    "a Gemma 3 model cannot be saved (AttributeError in gptqmodel's RoPE normalization)",
    (Patch("gptqmodel.utils.hf", "_normalize_rope_parameters_config_compat",
           "d368f4d371edaeea"),))

ALL = (FAST_LAYER_LOOP, TENSOR_CORE_HESSIAN, CHECKPOINT_GC, CHECKPOINT_VERIFY, SHARD_WRITES,
       LAYER_EVENTS, PER_LAYER_ROPE)
