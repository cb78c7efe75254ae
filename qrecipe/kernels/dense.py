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
