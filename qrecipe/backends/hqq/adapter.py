"""hqq adapter: Half-Quadratic Quantization of every decoder linear, no calibration data.

HQQ rounds each group of weights to `nbits` levels with a zero point and scale that a
half-quadratic solver fits to minimize a sparse (lp, p<1) error of the rounded weights, so outliers
cost less than under round-to-nearest's min/max, and no data is needed.

transformers 5.17 ships an `HqqConfig`, but its quantizer quantizes nothing on load
(`HqqHfQuantizer.get_quantize_ops` is not implemented: "QuantizationMethod.HQQ is not available
yet") and cannot load a saved HQQ checkpoint either. So the model loads dense through
transformers, hqq's own `AutoHQQHFModel.quantize_model` replaces each linear by an `HQQLinear`
(hqq's quantization, not qrecipe's), and `save_pretrained` writes the layers' safetensors state
with transformers' `hqq` quantization_config (the layout transformers' HQQ integration wrote and
read before 5.x, and that HQQ checkpoints on the hub use). qrecipe/kernels/hqq.py reloads it.
"""
from __future__ import annotations

import time
from typing import Any, Dict

from qrecipe.backends import hf_patches
from qrecipe.backends.base import (
    BACKENDS,
    SHARD_BYTES,
    TRANSFORMERS,
    Backend,
    QuantizeRequest,
    QuantizeResult,
)
from qrecipe.backends.capabilities import CAPABILITIES, PER_CHANNEL
from qrecipe.backends.patching import Supported
from qrecipe.errors import QRecipeError
from qrecipe.kernels.hqq import quantization_config

HQQ = Supported("hqq", "0.2.8")
AXES = (0, 1)
COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")


@BACKENDS.register("hqq")
class HQQBackend(Backend):
    name = "hqq"
    # accelerate: hqq imports its init_empty_weights (reload) at import time.
    requires = (("hqq", "hqq==0.2.8.post1"), ("accelerate", "accelerate"))
    support = CAPABILITIES["hqq"]
    versions = (TRANSFORMERS, HQQ)

    def library_import(self) -> None:
        import torch  # noqa: F401 - the libraries' import, timed
        from hqq.models.hf.base import AutoHQQHFModel  # noqa: F401  deferred: hqq (imports torch)
        from transformers import AutoModelForCausalLM  # noqa: F401

    def run(self, req: QuantizeRequest) -> QuantizeResult:
        t_import = self.imported()  # 0 in a sweep's later jobs
        from hqq.models.hf.base import AutoHQQHFModel
        from transformers import AutoModelForCausalLM
        qconfig = translate(req)
        compute = _torch_dtype(compute_dtype(req.method, req.dtype), "method.compute_dtype")
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            str(req.model_dir), dtype=_torch_dtype(req.dtype, "model.dtype"),
            device_map={"": req.device})
        t1 = time.perf_counter()
        # hqq's own quantization: every linear but lm_head becomes an HQQLinear on req.device
        AutoHQQHFModel.quantize_model(model, quant_config=qconfig, compute_dtype=compute,
                                      device=req.device)
        t2 = time.perf_counter()
        details = self._details(model, req)
        took = _save(model, req, qconfig, details["skipped_modules"])
        details["seconds"] = {"import": round(t_import, 2), "load": round(t1 - t0, 2),
                              "quantize": round(t2 - t1, 2), "save": round(took.pop("save"), 2)}
        details["qrecipe_seconds"] = {k: round(v, 2) for k, v in took.items()}
        return QuantizeResult(format=self.support[req.method.name].format, details=details)

    def _details(self, model: Any, req: QuantizeRequest) -> Dict[str, Any]:
        """Effective settings, read back from the quantized layers rather than echoed."""
        import torch
        from hqq.core.quantize import HQQLinear  # deferred: hqq

        layers = [m for m in model.modules() if isinstance(m, HQQLinear)]
        skipped = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        meta = layers[0].meta if layers else {}
        params = (layers[0].quant_config or {}).get("weight_quant_params", {}) if layers else {}
        return {
            "library": "hqq", "bits": req.bits, "device": req.device, "dtype": req.dtype,
            "nbits": meta.get("nbits"), "group_size": meta.get("group_size"),
            "axis": meta.get("axis"), "packing": meta.get("packing"),
            "compute_dtype": str(layers[0].compute_dtype).replace("torch.", "")
            if layers else None,
            # hqq's solver on (optimize) and the zero point rounded to the grid (4-bit only)
            "optimize": params.get("optimize"), "round_zero": params.get("round_zero"),
            "quantized_linear_layers": len(layers),
            "skipped_modules": skipped,  # left in the model's dtype (the tied lm_head here)
            "versions": self.package_versions()}


def translate(req: QuantizeRequest) -> Dict[str, Any]:
    """The request as hqq's quant config (its BaseQuantizeConfig): nbits, group, axis."""
    from hqq.core.quantize import BaseQuantizeConfig  # deferred: hqq (imports torch)
    axis = int(req.method.axis)
    if axis not in AXES:
        raise QRecipeError("hqq groups along axis 0 or 1", key="method.axis", value=axis,
                           allowed=AXES)
    group = None if req.group_size == PER_CHANNEL else int(req.group_size)
    return BaseQuantizeConfig(nbits=int(req.bits), group_size=group, axis=axis)


def compute_dtype(m: Any, model_dtype: str) -> str:
    """method.compute_dtype, with `auto` = the dtype the model is loaded in."""
    name = str(m.compute_dtype)
    if name not in COMPUTE_DTYPES:
        raise QRecipeError("not a compute dtype hqq takes", key="method.compute_dtype",
                           value=name, allowed=COMPUTE_DTYPES)
    return model_dtype if name == "auto" else name


def _torch_dtype(name: str, key: str) -> Any:
    import torch
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise QRecipeError("not a torch dtype", key=key, value=name,
                           allowed=COMPUTE_DTYPES[1:])
    return dtype


def _save(model: Any, req: QuantizeRequest, qconfig: Dict[str, Any],
          skipped: list) -> Dict[str, float]:
    """save_pretrained writes each HQQLinear's state (hqq encodes its meta as tensors for
    safetensors) under the layer's name, and config.json the hqq quantization_config; each
    shard hashed as it is written (hf_patches.save_hashed: the seconds of each)."""
    model.config.quantization_config = quantization_config(qconfig, skipped)
    req.out_dir.mkdir(parents=True, exist_ok=True)
    return hf_patches.save_hashed(
        lambda: model.save_pretrained(str(req.out_dir), max_shard_size=SHARD_BYTES))
