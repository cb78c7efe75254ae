"""HQQ checkpoints (qrecipe/backends/hqq): their config.json entry, and the loader that runs them.

transformers 5.17 cannot load an HQQ checkpoint (its HqqHfQuantizer leaves the layers as
nn.Linear: the code that built HQQLinear layers on load is commented out), so
``load_hqq`` rebuilds the model with hqq's own loader (`AutoHQQHFModel.from_quantized`: an empty
model from config.json, each saved HQQLinear state loaded by `HQQLinear.load_state_dict`), reading
the safetensors files `save_pretrained` wrote instead of hqq's pickle (qmodel.pt). The kernel:
`torch` is hqq's PYTORCH backend (dequantize + matmul on every forward, CPU and CUDA; its ATen
backend needs the hqq_aten CUDA extension, and PYTORCH_COMPILE a torch.compile per shape);
`dequantized` replaces each HQQLinear by a dense nn.Linear holding `HQQLinear.dequantize()`, once.

torch and hqq are imported when a function runs, never at import.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Dict, List

FORMAT = "hqq"
# hqq's forward per kernel name (HQQBackend members); `dequantized` runs nn.Linear instead
HQQ_BACKENDS = {"torch": "PYTORCH", "dequantized": "PYTORCH"}


def quantization_config(qconfig: Dict[str, Any], skipped: List[str]) -> Dict[str, Any]:
    """config.json's quantization_config of an HQQ checkpoint: the dict transformers' HQQ
    integration stores (integrations/hqq.py prepare_for_hqq_linear)."""
    return {"quant_method": FORMAT, "quant_config": qconfig, "skip_modules": list(skipped)}


def weight_params(saved: Dict[str, Any]) -> Dict[str, Any]:
    """nbits, group_size, axis ... of a saved quantization_config (one config for all layers)."""
    return dict((saved.get("quant_config") or {}).get("weight_quant_params") or {})


@functools.lru_cache(maxsize=1)
def _loader() -> Any:
    """hqq's HF model class, reading safetensors shards and keeping tied weights tied."""
    from hqq.models.hf.base import AutoHQQHFModel  # deferred: hqq (imports torch)
    from safetensors.torch import load_file

    class SafetensorsHQQ(AutoHQQHFModel):
        @classmethod
        def get_weight_file(cls, save_dir: str) -> str:  # the file from_quantized checks for
            return str(min(Path(save_dir).glob("*.safetensors")))

        @classmethod
        def load_weights(cls, save_dir: str, map_location=None) -> Dict[str, Dict[str, Any]]:
            """{module name: its state dict}, as hqq's qmodel.pt holds it."""
            out: Dict[str, Dict[str, Any]] = {}
            for f in sorted(Path(save_dir).glob("*.safetensors")):
                for key, t in load_file(str(f), device=str(map_location)).items():
                    module, _, name = key.rpartition(".")
                    out.setdefault(module, {})[name] = t
            return out

        @classmethod
        def patch_model(cls, model, patch_nonlinear_fct, patch_linear_fct, patch_params,
                        verbose: bool = True) -> None:
            # a tied lm_head has no tensor of its own in the files: drop its meta parameter
            # (hqq would move it to the device and fail), tie_weights() restores it
            for target in model.get_expanded_tied_weights_keys():
                module, _, name = target.rpartition(".")
                setattr(model.get_submodule(module), name, None)
            super().patch_model(model, patch_nonlinear_fct, patch_linear_fct, patch_params,
                                verbose=False)

    return SafetensorsHQQ


def saved_dtype(path: Path) -> str:
    """The dtype config.json names (transformers 5 writes `dtype`, 4.x `torch_dtype`)."""
    conf = json.loads((Path(path) / "config.json").read_text())
    return str(conf.get("dtype") or conf.get("torch_dtype") or "float32")


def load_hqq(path: Path, dtype: str = "auto", device: str = "cpu", kernel: str = "torch"):
    """The saved HQQ checkpoint at `path` as a causal LM on `device`, computing in `dtype`
    ("auto": the checkpoint's), run by `kernel` (HQQ_BACKENDS); `qrecipe_kernel` names it."""
    import torch
    from hqq.core.quantize import HQQBackend, HQQLinear  # deferred: hqq

    compute = getattr(torch, saved_dtype(path) if dtype == "auto" else dtype)
    HQQLinear.set_backend(getattr(HQQBackend, HQQ_BACKENDS[kernel]))
    model = _loader().from_quantized(str(path), compute_dtype=compute, device=device)
    model.tie_weights()
    if kernel == "dequantized":
        dequantize_hqq(model)
    model.eval()
    model.qrecipe_kernel = kernel
    return model


def dequantize_hqq(model) -> int:
    """Replace every HQQLinear by a dense nn.Linear holding its HQQLinear.dequantize() weight
    (marked `qrecipe_dequantized`, as kernels/dense.py marks its layers); returns how many."""
    import torch
    from hqq.core.quantize import HQQLinear  # deferred: hqq

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, HQQLinear)]
    with torch.no_grad():
        for name, mod in layers:
            w = mod.dequantize().to(mod.compute_dtype)
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=mod.bias is not None,
                                  device="meta", dtype=w.dtype)
            lin.weight = torch.nn.Parameter(w, requires_grad=False)
            if mod.bias is not None:
                lin.bias = torch.nn.Parameter(mod.bias.to(w.dtype), requires_grad=False)
            lin.qrecipe_dequantized = True
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, lin)
    return len(layers)
