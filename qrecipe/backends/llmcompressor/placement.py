"""Where llm-compressor's run keeps the model's weights and the activations between layers.

llm-compressor's defaults suit a model larger than the GPU: the weights stay in CPU RAM and its
sequential pipeline onloads one decoder layer at a time (and writes each changed weight back),
and each layer's inputs and outputs go back to CPU RAM between layers. On a GPU with room for the
whole model both are pageable copies on every layer. Measured on an H100, AWQ on the random
Llama-2-7B shape, 4 layers, 128 x 512 rows, batch 32, bfloat16 (benchmarks/awq_llmc_variants.py,
docs/benchmarks.md): 3.58-3.64 s a layer with llm-compressor's defaults, 3.08-3.16 s with the
activations on the GPU (a profile of it still spent 2.8 s of 12.5 copying weights back to CPU
RAM), 2.19-2.21 s with the model on the GPU as well. All 32 layers: 68.5 s of quantize (122.1 s
before). The checkpoint's bytes are the same either way (tests/test_gpu.py).

The two hardware keys, for the methods in METHODS:
- `stream_activations=false`: the activations between layers stay on the execution device
  (llm-compressor's `sequential_offload_device`);
- `model_on_gpu=true`: the model is loaded onto the GPU when its weights, in the job's dtype,
  take at most RESIDENT_SHARE of the GPU's free memory; otherwise it loads into CPU RAM as
  before, with a line that says why.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from qrecipe.inputs.shapes import DTYPE_BYTES
from qrecipe.record.stheader import FLOAT_WIDTHS, read_header

log = logging.getLogger(__name__)

# The rest of the GPU holds what the run adds on top of the weights: the calibration activations
# (128 x 2048 rows of an 8192-wide model in 16 bits is 4 GiB, twice while a layer's outputs are
# written), AWQ's cached parent inputs and outputs per mapping, and the fake-quantized copy of a
# layer's weights. Half is a margin chosen, not measured: a 7B (13.5 GB) and a 13B (26 GB) fit on
# an 80 GB GPU, a 34B in 16 bits does not.
RESIDENT_SHARE = 0.5
# Measured and byte-checked on the GPU for AWQ only; llm-compressor's other methods (GPTQ, the
# preset schemes, AutoRound with its own device handling) keep its defaults until measured.
METHODS = ("awq",)


def weight_bytes(model_dir: Path, dtype: str) -> int:
    """Bytes of the checkpoint's tensors once loaded in `dtype` (floating tensors are cast to
    it; others keep their stored bytes), read from the safetensors headers only."""
    total, width = 0, DTYPE_BYTES.get(dtype, 4)
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with open(f, "rb") as fh:
            _, header = read_header(fh)
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            stored = FLOAT_WIDTHS.get(entry["dtype"])
            total += (end - start) // stored * width if stored else end - start
    return total


def activations(hw: Dict[str, Any], device: str, method: str) -> Dict[str, Any]:
    """oneshot's argument for the activations between layers (none: its default, CPU RAM)."""
    if bool(hw.get("stream_activations", True)) or device == "cpu" or method not in METHODS:
        return {}
    return {"sequential_offload_device": device}


def fits(weights: int, free: int) -> bool:
    """Whether weights of this many bytes go onto a GPU with this much free memory (also what
    `qrecipe plan` assumes of a profile with model_on_gpu)."""
    return weights <= RESIDENT_SHARE * free


def model_device(hw: Dict[str, Any], device: str, model_dir: Path, dtype: str, method: str,
                 free_gpu_bytes: Callable[[], int]) -> Tuple[Optional[str], str]:
    """(the device to load the whole model onto, or None for CPU RAM; why, in a few words).
    free_gpu_bytes: asked only when the rest allows the GPU (the caller imports torch)."""
    if not bool(hw.get("model_on_gpu", False)):
        return None, "hardware.model_on_gpu is false"
    if method not in METHODS:
        return None, f"measured for {', '.join(METHODS)} only"
    if device != "cuda":
        return None, f"runs on {device}"
    need, free = weight_bytes(model_dir, dtype), free_gpu_bytes()
    if not fits(need, free):
        why = (f"its weights ({need / 2 ** 30:.1f} GiB in {dtype}) exceed "
               f"{RESIDENT_SHARE:.0%} of the GPU's free {free / 2 ** 30:.1f} GiB")
        log.info("llm-compressor: the model stays in CPU RAM and is onloaded layer by layer: %s",
                 why)
        return None, why
    return device, f"{need / 2 ** 30:.1f} GiB of {free / 2 ** 30:.1f} GiB free"
