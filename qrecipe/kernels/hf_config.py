"""What makes transformers load a checkpoint with the kernel qrecipe/kernels/table.py resolved: the
config passed to from_pretrained, and the lines the report prints for users to do the same."""
from __future__ import annotations

from typing import Any, Dict, List

from qrecipe.errors import QRecipeError
from qrecipe.kernels.dense import dequantize_linears, match_decompressed_dtype
from qrecipe.kernels.hqq import FORMAT as HQQ_FORMAT
from qrecipe.kernels.table import Kernel


def quantization_config(fmt: str, k: Kernel, saved: Dict[str, Any]) -> Any:
    """The transformers config to pass to from_pretrained so the checkpoint loads with kernel
    `k`; None for formats whose kernel is fixed. `saved` is config.json's quantization_config."""
    if fmt == "gptq":
        from transformers import GPTQConfig
        return GPTQConfig(bits=int(saved.get("bits", 4)), backend=k.hf_backend)
    if fmt == "awq":
        from transformers import AwqConfig
        return AwqConfig(bits=int(saved.get("bits", 4)), backend=k.hf_backend)
    if fmt == "compressed-tensors":
        from transformers import CompressedTensorsConfig
        if k.name == "fp8":  # transformers' FP8 matmul layers (kernels/table.py)
            return CompressedTensorsConfig(use_optimized_inference=True)
        return CompressedTensorsConfig(dequantize=k.name == "dequantized")
    if fmt == HQQ_FORMAT:
        # from_pretrained would "load" it with every quantized layer's weight MISSING, i.e.
        # random: refuse rather than score that (the caller loads it with load_hqq instead)
        raise QRecipeError("transformers 5.17 cannot load an hqq checkpoint", key="format",
                           value=fmt, hint="load it with qrecipe.kernels.hqq.load_hqq")
    return None


def load_lines(fmt: str, k: Kernel, bits: int, device: str = "cuda") -> List[str]:
    """The Python lines that load a saved checkpoint ("model") with kernel k: the loading snippet
    the report prints."""
    if k.via:  # plain transformers cannot: qrecipe rewrites the layout in a temporary directory
        return ["from qrecipe.inputs.models import load_causal_lm  # rewrites the layout "
                "in a temp dir",
                f'model = load_causal_lm("model", "auto", "{device}", kernel="{k.name}"'
                + (", allow_jit=True)" if k.jit else ")")]
    if fmt == HQQ_FORMAT:  # transformers 5.17 cannot load it (qrecipe/kernels/hqq.py)
        return ["from qrecipe.kernels.hqq import load_hqq",
                f'model = load_hqq("model", "auto", "{device}", kernel="{k.name}")']
    imp, kw = "", ""
    if fmt in ("gptq", "awq"):
        cls = "GPTQConfig" if fmt == "gptq" else "AwqConfig"
        imp = f"from transformers import {cls}"
        kw = f'quantization_config={cls}(bits={bits}, backend="{k.hf_backend}"), '
    elif fmt == "compressed-tensors" and k.name in ("dequantized", "fp8"):
        imp = "from transformers import CompressedTensorsConfig"
        arg = "dequantize=True" if k.name == "dequantized" else "use_optimized_inference=True"
        kw = f"quantization_config=CompressedTensorsConfig({arg}), "
    lines = ["from transformers import AutoModelForCausalLM", *([imp] if imp else []),
             f'model = AutoModelForCausalLM.from_pretrained("model", {kw}device_map="auto")']
    if fmt in ("gptq", "awq") and k.name == "dequantized":
        lines += ["from qrecipe.kernels.dense import dequantize_linears",
                  "dequantize_linears(model)  # dense weights: the original's decode speed"]
    return lines


def finish_load(model) -> None:
    """What from_pretrained leaves to do for the kernel the model was loaded for
    (`model.qrecipe_kernel`): the `dequantized` kernel of a GPTQ or AWQ checkpoint replaces its
    quantized layers by dense ones (qrecipe/kernels/dense.py; compressed-tensors dequantizes in
    transformers itself, leaving no layer to replace). No-op otherwise, and when done already.
    A compressed-tensors checkpoint's decompressed FP4 weights are cast to the model's dtype
    (kernels/dense.py match_decompressed_dtype)."""
    if getattr(model, "qrecipe_kernel", None) == "dequantized":
        dequantize_linears(model)
    match_decompressed_dtype(model)
