"""bitsandbytes adapter: 4-bit NF4/FP4 or 8-bit LLM.int8, quantized while transformers loads.

No calibration data: bnb rounds each weight block to its absmax-scaled code book (4-bit) or each
row to int8 with an absmax scale (8-bit). The saved checkpoint keeps bnb's packed weights and
quant state, and ``AutoModelForCausalLM.from_pretrained(out_dir)`` reloads it as bnb layers.
bitsandbytes 0.50 runs both modes on CPU (4-bit uses a slower torch fallback without the
optional `kernels` package), so nothing here needs a GPU.
"""
from __future__ import annotations

import time
from typing import Any, Dict

from qrecipe.backends import hf_patches
from qrecipe.backends.base import (
    BACKENDS,
    SHARD_BYTES,
    Backend,
    QuantizeRequest,
    QuantizeResult,
)
from qrecipe.backends.capabilities import CAPABILITIES
from qrecipe.errors import QRecipeError

_QUANT_TYPES = ("nf4", "fp4")


@BACKENDS.register("bitsandbytes")
class BitsAndBytesBackend(Backend):
    name = "bitsandbytes"
    # accelerate: transformers' bnb quantizer refuses to run without it (it is not pinned in
    # constraints.txt, so any version transformers accepts will do).
    requires = (("bitsandbytes", "bitsandbytes==0.50.2"), ("accelerate", "accelerate"))
    support = CAPABILITIES["bitsandbytes"]

    def library_import(self) -> None:
        import torch  # noqa: F401 - the libraries' import, timed
        from transformers import AutoModelForCausalLM  # noqa: F401

    def run(self, req: QuantizeRequest) -> QuantizeResult:
        t_import = self.imported()  # 0 in a sweep's later jobs
        qconfig = _translate(req)
        t0 = time.perf_counter()
        model = _load(req, qconfig)  # bnb quantizes each weight as it is placed
        t1 = time.perf_counter()
        req.out_dir.mkdir(parents=True, exist_ok=True)
        # save_pretrained writes the packed weights + quant state and the quantization_config,
        # so a plain from_pretrained(out_dir) rebuilds the bnb layers without the config again.
        took = hf_patches.save_hashed(  # each shard hashed as it is written
            lambda: model.save_pretrained(str(req.out_dir), max_shard_size=SHARD_BYTES))
        details = self._details(model, req)
        # the libraries' own time; bnb quantizes each weight as it is loaded, so "load" holds it
        details["seconds"] = {"import": round(t_import, 2), "load": round(t1 - t0, 2),
                              "save": round(took.pop("save"), 2)}
        details["qrecipe_seconds"] = {k: round(v, 2) for k, v in took.items()}
        return QuantizeResult(format=self.support[req.method.name].format, details=details)

    def _details(self, model: Any, req: QuantizeRequest) -> Dict[str, Any]:
        """Effective settings, read back from the quantized layers rather than echoed."""
        import bitsandbytes as bnb
        import torch

        m = req.method
        bnb_types = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
        layers = [mod for mod in model.modules() if isinstance(mod, bnb_types)]
        # transformers leaves the output head (tied to the embedding here) unquantized
        skipped = [name for name, mod in model.named_modules()
                   if isinstance(mod, torch.nn.Linear) and not isinstance(mod, bnb_types)]
        details: Dict[str, Any] = {
            "library": "bitsandbytes",
            "bits": req.bits,
            "device": req.device,
            "dtype": req.dtype,  # dtype of the layers bnb leaves alone (embeddings, norms, head)
            "quantized_linear_layers": len(layers),
            "skipped_modules": skipped,
            "versions": self.package_versions(),
        }
        if req.bits == 4:
            state = layers[0].weight.quant_state if layers else None
            details.update(
                scheme=str(m.quant_type), double_quant=bool(m.double_quant),
                compute_dtype=compute_dtype(m, req.dtype),
                blocksize=getattr(state, "blocksize", None),
                # double quant stores the fp32 block absmax values as 8 bit in blocks of 256
                nested_blocksize=getattr(getattr(state, "state2", None), "blocksize", None),
                quant_storage=str(layers[0].weight.dtype).replace("torch.", "") if layers else None)
        else:
            details.update(
                scheme="llm.int8", int8_threshold=float(m.int8_threshold),
                scale="absmax per output row",
                # outlier input features (|x| > threshold) go through a fp16 matmul; the rest
                # through int8. Inputs are cast to fp16 either way.
                has_fp16_weights=False)
        return details


def _translate(req: QuantizeRequest):
    """The request as transformers' BitsAndBytesConfig."""
    import torch
    from transformers import BitsAndBytesConfig
    m = req.method
    if req.bits == 4:
        if m.quant_type not in _QUANT_TYPES:
            raise QRecipeError("unknown 4-bit data type", key="method.quant_type",
                               value=m.quant_type, allowed=_QUANT_TYPES)
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=str(m.quant_type),
            bnb_4bit_use_double_quant=bool(m.double_quant),
            bnb_4bit_compute_dtype=_torch_dtype(torch, compute_dtype(m, req.dtype),
                                                "method.compute_dtype"))
    # LLM.int8: the quant_type/double_quant/compute_dtype options do not apply.
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=float(m.int8_threshold))


def _load(req: QuantizeRequest, qconfig):
    """An explicit single-device map: bnb quantizes each weight as it is placed, on that
    device (CPU kernels on "cpu"); "auto" could split layers across devices or offload."""
    import torch
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(
        str(req.model_dir), quantization_config=qconfig,
        dtype=_torch_dtype(torch, req.dtype, "model.dtype"), device_map={"": req.device})


def compute_dtype(m: Any, model_dtype: str) -> str:
    """method.compute_dtype, with `auto` = the dtype the model is loaded in when that is a half
    type, else bfloat16. A compute dtype other than the model's casts every activation twice per
    layer: NF4 decode on an H200 went from 0.91-0.93x fp16 (bf16 compute on a float16 model) to
    1.06-1.11x (float16 compute) at batch 1 (docs/benchmarks.md, bnb_decode.py)."""
    if str(m.compute_dtype) != "auto":
        return str(m.compute_dtype)
    return model_dtype if model_dtype in ("float16", "bfloat16") else "bfloat16"


def _torch_dtype(torch: Any, name: Any, key: str) -> Any:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise QRecipeError("not a torch dtype", key=key, value=name,
                           allowed=("float32", "bfloat16", "float16"))
    return dtype
