"""Every llm-compressor function qrecipe replaces, in one place: owner, name and the sha256 of
the upstream source at the pinned 0.14.0.1 (tests/test_patches.py checks the installed library
still has it). The two AWQ patches decide whether an AWQ run finishes (CPU-only torch, float16
models) and what the float16 scale search picks, so on another llm-compressor an AWQ run is
refused; the per-layer log is skipped with one warning line.
"""
from __future__ import annotations

from qrecipe.backends.patching import Patch, PatchSet, Supported

LLMCOMPRESSOR = Supported("llmcompressor", "0.14")
COMPRESSED_TENSORS = Supported("compressed-tensors", "0.19")  # no patches; checked at run start

CPU_PINNING = PatchSet(
    LLMCOMPRESSOR, "AWQ on CPU-only torch (no pinned memory)",
    "AWQ fails on a machine without an accelerator",
    (Patch("llmcompressor.pipelines.cache:IntermediatesCache", "pin_memory", "12f33ab17f3e4174"),),
    methods=("awq",), required=True)

FP32_AWQ_LOSS = PatchSet(
    LLMCOMPRESSOR, "AWQ's scale-search loss summed in float32",
    "float16 AWQ can fail or pick other scales",
    (Patch("llmcompressor.modifiers.transform.awq:AWQModifier", "_compute_loss",
           "d5da19b3f003f430"),),
    methods=("awq",), required=True)

LAYER_EVENTS = PatchSet(
    LLMCOMPRESSOR, "per-layer progress", "no per-layer lines in run.log and metrics.json",
    (Patch("llmcompressor.core:LifecycleCallbacks", "calibration_start", "9382618170580a3f"),
     Patch("llmcompressor.core:LifecycleCallbacks", "sequential_epoch_end", "a0a664a95f3088c4")))

ALL = (CPU_PINNING, FP32_AWQ_LOSS, LAYER_EVENTS)
