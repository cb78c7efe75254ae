"""The `dequantized` kernel of GPTQ and AWQ checkpoints on CPU: every quantized linear layer of a
loaded model replaced by a plain `torch.nn.Linear` holding its dequantized weight, once, at load.

Why: at batch 1 on a CPU, gptqmodel's torch kernels dequantize every weight on every forward
(TorchLinear through a torch.compile'd function that hits dynamo's recompile limit once per
layer shape), so the quantized model decodes several times slower than the original; its int4
kernels (torch_fused, torch_aten) and int8 kernel pay a per-layer overhead that a 576-wide model
never earns back. The dense weights decode at the original model's speed with the same logits
(the weight is the one the torch kernel computes per forward, cast to the model's dtype), and
take the original model's memory: the checkpoint on disk stays quantized. Measured:
benchmarks/cpu_kernels.py (docs/benchmarks.md, "CPU decode per kernel").

Imports torch when called (deferred), never at import.
"""
from __future__ import annotations

from typing import Any

# gptqmodel's AWQ torch kernel has no dequantize_weight(): its forward calls this function
_AWQ_DEQUANT = ("gptqmodel.nn_modules.qlinear.torch_awq", "dequantize_gemm")


def _dense_weight(mod, dtype) -> Any:
    """mod's weight as (in_features, out_features): what its forward multiplies x by."""
    import torch
    cls = type(mod)
    if getattr(cls, "QUANT_TYPE", "").startswith("awq"):
        import importlib
        fn = getattr(importlib.import_module(_AWQ_DEQUANT[0]), _AWQ_DEQUANT[1])
        # its forward dequantizes with the scales in the compute dtype (float16 for float32)
        half = dtype if dtype in (torch.float16, torch.bfloat16) else torch.float16
        w = fn(qweight=mod.qweight, qzeros=mod.qzeros, scales=mod.scales.to(half),
               bits=mod.bits, group_size=mod.group_size)
    else:
        # the class's function, not the torch.compile'd wrapper the instance holds (optimize()):
        # one eager call per layer, no compile
        w = cls.dequantize_weight(mod)
    return w


def dequantize_linears(model, dtype=None) -> int:
    """Replace every gptqmodel quantized linear layer of `model` by a dense nn.Linear in `dtype`
    (default: the model's embedding dtype); returns how many. Each new layer is marked
    `qrecipe_dequantized` (kernels/table.py loaded_kernels counts them)."""
    import torch

    dtype = dtype or model.get_input_embeddings().weight.dtype
    quant = [(n, m) for n, m in model.named_modules()
             if hasattr(type(m), "QUANT_TYPE") and hasattr(m, "qweight")]
    with torch.no_grad():
        for name, mod in quant:
            w = _dense_weight(mod, dtype).to(dtype).contiguous()
            lin = torch.nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None,
                                  device="meta", dtype=dtype)
            # the (in, out) matrix, seen transposed: F.linear then runs the very matmul the
            # kernel's forward runs (x @ w), and gives the same logits to the bit; a contiguous
            # (out, in) copy takes another oneDNN path that rounds bfloat16 differently
            lin.weight = torch.nn.Parameter(w.t(), requires_grad=False)
            if mod.bias is not None:
                lin.bias = torch.nn.Parameter(mod.bias.to(dtype).clone(), requires_grad=False)
            lin.qrecipe_dequantized = True
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, lin)
    return len(quant)


def match_decompressed_dtype(model) -> int:
    """Cast the dense weights compressed-tensors decompressed into another floating dtype than
    the model's back to the model's (its embedding dtype); returns how many.

    Why: compressed-tensors 0.19 unpacks FP4 (NVFP4, MXFP4) weights into bfloat16 whatever the
    model's dtype (compressors/nvfp4/helpers.py unpack_fp4_from_uint8), so a checkpoint reloaded
    in float32 (qrecipe/run/dtypes.py on a CPU without fast bfloat16) fails its first matmul
    ("expected m1 and m2 to have the same dtype"). bfloat16 -> float32 is exact: the values stay
    those of the checkpoint. Only layers carrying a compressed-tensors scheme are touched.
    transformers leaves the weights compressed until the first forward (a pre-hook of the
    model's, `ct_decompress_hook`): for an FP4 checkpoint that hook runs here instead."""
    import torch

    dtype = model.get_input_embeddings().weight.dtype
    hook = getattr(model, "ct_decompress_hook", None)
    if hook is not None and dtype != torch.bfloat16 and _fp4(model):
        model._forward_pre_hooks[hook.id](model, ())  # removes itself once done
    mods = [m for m in model.modules() if isinstance(m, torch.nn.Linear)
            and hasattr(m, "quantization_scheme") and getattr(m, "weight", None) is not None
            and m.weight.is_floating_point() and m.weight.dtype != dtype]
    if not mods:
        return 0
    # compressed-tensors' offload cache copies a same-shaped assignment into the old tensor
    # (keeping its dtype) unless onloading is disabled
    from compressed_tensors.offload import disable_onloading  # deferred: torch

    with torch.no_grad(), disable_onloading():
        for mod in mods:
            mod.weight = torch.nn.Parameter(mod.weight.to(dtype), requires_grad=False)
    return len(mods)


def _fp4(model) -> bool:
    """Whether the model's compressed-tensors config quantizes weights to 4-bit floats."""
    qc = getattr(model.config, "quantization_config", None)
    qc = qc.to_dict() if hasattr(qc, "to_dict") else (qc or {})
    return any((g.get("weights") or {}).get("type") == "float"
               and (g.get("weights") or {}).get("num_bits") == 4
               for g in (qc.get("config_groups") or {}).values())
