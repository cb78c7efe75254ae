"""The llm-compressor methods beyond int weight-only: FP8, INT8 W8A8, AutoRound, NVFP4, MXFP4.

Each is a compressed-tensors preset scheme (compressed_tensors.quantization.quant_scheme
PRESET_SCHEMES) applied by llm-compressor's own modifiers; qrecipe chooses the preset and the
modifiers and checks the method's options, nothing more (no quantization math here). The
checks run before the model is loaded, each a one-line QRecipeError.

What reloads where (transformers 5.17, compressed-tensors 0.19): every scheme reloads on CPU,
its weights decompressed to dense at load and its activations quantized and dequantized in
forward by compressed-tensors (kernel `emulated`, qrecipe/kernels/table.py). FP8 matmuls need
an Ada/Hopper GPU and a server such as vLLM; FP4 matmuls need Blackwell (no Hopper kernel).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from qrecipe.errors import QRecipeError
from qrecipe.inputs.shapes import read_config
from qrecipe.kernels import table as kernels

# method.scheme of method=fp8 -> compressed-tensors preset
FP8_PRESETS = {"dynamic": "FP8_DYNAMIC", "static": "FP8", "block": "FP8_BLOCK"}
# FP8_BLOCK: 128x128 weight blocks, activations in groups of 128 (quant_scheme.py)
FP8_BLOCK = 128
# method.preset of method=autoround -> auto-round's own recipe name (auto_round/cli/main.py
# RECIPES: light = 50 iters at lr 5e-3, default = 200 iters, best = 1000 iters); read from
# auto-round at run time, so its values are auto-round's
AUTOROUND_PRESETS = ("light", "default", "best")
METHODS = ("fp8", "w8a8", "autoround", "nvfp4", "mxfp4")
# which modifiers run, for the report
ALGORITHM = {"fp8": "QuantizationModifier", "w8a8": "SmoothQuantModifier+GPTQModifier",
             "autoround": "AutoRoundModifier", "nvfp4": "QuantizationModifier",
             "mxfp4": "QuantizationModifier"}


# SmoothQuant folds its scales into the norm before q/k/v and the one before gate/up.
# llm-compressor 0.14 maps Gemma 2/3 as Llama (post_attention_layernorm -> gate/up_proj,
# smoothquant/utils.py MAPPINGS_REGISTRY), but their MLP reads pre_feedforward_layernorm and
# their RMSNorm scales by (1 + weight), which dividing the weight does not divide: measured on
# Gemma 3 270M, perplexity 1.6e11 against 24.9 (docs/compare.md). Architecture name prefixes.
SMOOTHQUANT_UNSOUND = ("Gemma2", "Gemma3")
# method.smoothing_strength: null resolves to this where SmoothQuant is sound (llm-compressor's
# W8A8 examples), to 0 (none) on SMOOTHQUANT_UNSOUND
SMOOTHING_DEFAULT = 0.8


def algorithm(method: Any, architecture: str) -> str:
    """The modifiers that ran, for the report (W8A8 without SmoothQuant: GPTQ alone)."""
    if method.name == "w8a8" and not smoothing(method, architecture):
        return "GPTQModifier"
    return ALGORITHM[method.name]


def smoothing(method: Any, architecture: str) -> float:
    """SmoothQuant's strength of a W8A8 run on this architecture; 0: no SmoothQuant."""
    if method.get("smoothing_strength") is not None:
        return float(method.smoothing_strength)
    return 0.0 if str(architecture).startswith(SMOOTHQUANT_UNSOUND) else SMOOTHING_DEFAULT


def architecture_of(model_dir: Any) -> str:
    """The first of config.json's architectures (the project's one config reader, within the
    boundary's limits), "" where it names none."""
    return str((read_config("local", str(model_dir)).get("architectures") or [""])[0])


def check_model(method: Any, architecture: str) -> None:
    """What the method cannot do on this architecture; one line before any weight."""
    if method.name == "w8a8" and method.get("smoothing_strength") \
            and str(architecture).startswith(SMOOTHQUANT_UNSOUND):
        raise QRecipeError(
            f"llm-compressor's SmoothQuant folds its scales into Llama's norms, which "
            f"{architecture} does not have (measured on Gemma 3 270M: perplexity 1.6e11)",
            key="method.smoothing_strength", value=method.smoothing_strength,
            hint="leave method.smoothing_strength unset (or 0): W8A8 without SmoothQuant, "
                 "+0.77 ppl on Gemma 3 270M")


def check(method: Any) -> None:
    """The method's option values (the schema has typed them already)."""
    name = method.name
    if name == "fp8" and method.scheme not in FP8_PRESETS:
        raise QRecipeError("unknown FP8 scheme", key="method.scheme", value=method.scheme,
                           allowed=", ".join(FP8_PRESETS))
    if name == "w8a8" and method.get("smoothing_strength") is not None \
            and not 0.0 <= float(method.smoothing_strength) < 1.0:
        raise QRecipeError("SmoothQuant's strength is a fraction", key="method.smoothing_strength",
                           value=method.smoothing_strength,
                           allowed="0 <= x < 1 (0.8 usual; 0: no SmoothQuant), or null")
    if name == "autoround":
        if method.preset not in AUTOROUND_PRESETS:
            raise QRecipeError("unknown AutoRound preset", key="method.preset",
                               value=method.preset, allowed=", ".join(AUTOROUND_PRESETS))
        if method.get("iters") is not None and int(method.iters) < 0:
            raise QRecipeError("iterations cannot be negative", key="method.iters",
                               value=method.iters, hint="0 is auto-round's RTN")


def preset(method: Any) -> Optional[str]:
    """The compressed-tensors preset of a preset method (None: built from bits/group size)."""
    name = method.name
    if name == "fp8":
        return FP8_PRESETS[method.scheme]
    if name == "w8a8":
        return "W8A8"
    if name in ("nvfp4", "mxfp4"):
        return name.upper() + ("" if method.activations else "A16")
    return None


def uses_rows(method: Any) -> bool:
    """Whether the scheme reads calibration data: static scales (FP8 static, NVFP4's activation
    global scale), SmoothQuant, GPTQ and AutoRound do; dynamic ones do not."""
    name = method.name
    if name == "fp8":
        return method.scheme == "static"
    if name == "nvfp4":
        return bool(method.activations)
    return name in ("w8a8", "autoround")


def autoround_settings(method: Any) -> Dict[str, Any]:
    """iters and lr from auto-round's own preset (method.iters wins where set)."""
    from auto_round.cli.main import RECIPES  # deferred: auto-round imports torch

    r = RECIPES[method.preset]
    iters = r["iters"] if method.get("iters") is None else int(method.iters)
    # batch_size: rows per tuning step (auto-round's recipes: 8), not hardware.calib_batch_size
    # (rows per forward while calibrating): it changes the optimisation, not only its speed
    return {"iters": iters, "lr": r["lr"], "batch_size": r["batch_size"],
            "preset": method.preset, "preset_iters": r["iters"],
            "preset_nsamples": r["nsamples"], "preset_seqlen": r["seqlen"]}


def autoround_batch(method: Any, rows: int) -> int:
    """AutoRound's rows per tuning step: its preset's, at most the rows there are."""
    return min(autoround_settings(method)["batch_size"], rows or 1)


def forward_batch(method: Any, requested: int, rows: int) -> int:
    """Rows per calibration forward (oneshot's batch_size) for a method. AutoRound caps it at
    its own tuning batch: auto-round 0.15 reads a cached input whose first dimension exceeds
    its batch_size as batch-second and, when the sequence is longer too, ends the process with
    exit(-1) and no traceback (calibration/llm.py). Measured: hardware=h100_80gb
    (calib_batch_size 32) exited with status 255 at the first block."""
    requested = max(1, int(requested))
    if method.name == "autoround":
        return min(requested, autoround_batch(method, rows))
    return requested


def modifiers(req: Any, ignore: List[str], weights: Any) -> List[Any]:
    """The llm-compressor recipe of a method in METHODS. `weights`: the int QuantizationArgs
    built from bits and group size (AutoRound's only)."""
    from compressed_tensors.quantization import QuantizationScheme  # deferred: torch
    from llmcompressor.modifiers.quantization import (  # deferred: torch
        GPTQModifier,
        QuantizationModifier,
    )

    m = req.method
    if m.name == "w8a8":
        from llmcompressor.modifiers.transform.smoothquant import (  # deferred: torch
            SmoothQuantModifier,
        )
        alpha = smoothing(m, architecture_of(req.model_dir))
        smooth = [SmoothQuantModifier(smoothing_strength=alpha)] if alpha else []
        return smooth + [GPTQModifier(targets=["Linear"], scheme="W8A8", ignore=list(ignore),
                                      dampening_frac=float(m.damp_percent),
                                      actorder="weight" if m.desc_act else None)]
    if m.name == "autoround":
        from llmcompressor.modifiers.autoround import AutoRoundModifier  # deferred: torch
        s = autoround_settings(m)
        batch = autoround_batch(m, len(req.calibration or ()))
        groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
        return [AutoRoundModifier(config_groups=groups, ignore=list(ignore), iters=s["iters"],
                                  lr=s["lr"], batch_size=batch,
                                  enable_torch_compile=bool(m.enable_torch_compile))]
    return [QuantizationModifier(targets=["Linear"], scheme=preset(m), ignore=list(ignore))]


def block_widths(method: Any) -> Optional[int]:
    """The width every quantized layer's input must be a multiple of, where the scheme fixes
    one that bits.group_size does not say (FP8 block)."""
    return FP8_BLOCK if method.name == "fp8" and method.scheme == "block" else None


def describe(saved: Dict[str, Any], method: Any, architecture: str) -> Dict[str, Any]:
    """The scheme as written to config.json: weights and activations, per config group."""
    group = next(iter(saved["config_groups"].values()))
    keys = ("num_bits", "type", "strategy", "group_size", "block_structure", "symmetric",
            "dynamic", "observer", "actorder")

    def args(a):
        return {k: a.get(k) for k in keys} if a else None
    out = {"preset": preset(method), "scheme": args(group.get("weights")),
           "activations": args(group.get("input_activations")),
           "uses_calibration": uses_rows(method)}
    if method.name == "fp8":
        out["fp8_scheme"] = method.scheme
    if method.name == "w8a8":
        out["smoothing_strength"] = smoothing(method, architecture)
        out["dampening_frac"] = float(method.damp_percent)
    if method.name == "autoround":
        out["autoround"] = autoround_settings(method)
        out["sym"] = bool(method.sym)
    return out


def reload_kernel(saved: Dict[str, Any], device: str, hardware: Any) -> Dict[str, Any]:
    """The kernel the evaluate stage reloads this checkpoint with on `device` (the same
    resolve() call qrecipe/inputs/models.py makes), and what it does."""
    hw = hardware or {}
    try:
        k = kernels.resolve("compressed-tensors", device, hw.get("kernel", "auto"),
                            bool(hw.get("allow_jit", False)),
                            **kernels.saved_facts("compressed-tensors", saved))
    except QRecipeError as e:
        return {"name": None, "note": str(e)}
    return {"name": k.name, "note": k.note}
