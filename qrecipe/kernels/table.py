"""Which inference kernel runs a quantized checkpoint, chosen rather than stumbled into.

Left alone, gptqmodel picks the "best" kernel it can import, and several of its CUDA kernels are
not shipped compiled: Marlin, ExLlamaV2 and AWQ GEMM are nvcc-built on first use (35 s to 2 min,
on every fresh machine) and Machete also downloads CUTLASS, which crashes offline
(socket.gaierror in machete_prepack_B). ``resolve`` turns (checkpoint format, device, compute
capability, ``hardware.kernel``, ``hardware.allow_jit``) into one named kernel that needs no
download and, unless ``allow_jit``, no compile; qrecipe/kernels/hf_config.py gives the transformers
config that makes from_pretrained use it. ``configure_jit_cache`` points gptqmodel's build cache
into qrecipe's cache dir, so an allowed compile happens once per machine.

Pure data and functions: importing this module imports neither torch nor transformers.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from qrecipe.errors import QRecipeError
from qrecipe.kernels import ct_gptq, gptq_awq, measured
from qrecipe.kernels.cpu import cpu_fast_bf16
from qrecipe.kernels.ct_gptq import (
    BITS as REWRITE_BITS,  # the widths compressed-tensors' rewrite takes
)

FORMATS = ("gptq", "awq", "compressed-tensors", "bitsandbytes", "hqq")


@dataclass(frozen=True)
class Kernel:
    name: str  # qrecipe's name, the value of hardware.kernel
    hf_backend: Optional[str]  # what transformers' GPTQConfig/AwqConfig(backend=...) takes
    devices: Tuple[str, ...]
    jit: bool = False  # nvcc-built on first use (gptqmodel ships no compiled kernels)
    download: bool = False  # fetches sources at build time (fails offline)
    min_cc: float = 0.0  # lowest CUDA compute capability
    dtypes: Tuple[str, ...] = ("float16", "bfloat16")
    zero_points: bool = True  # runs asymmetric checkpoints (sym=False); gptq Marlin does not
    bits: Tuple[int, ...] = ()  # weight widths it runs (its SUPPORTS_BITS); () = any
    group_sizes: Tuple[int, ...] = ()  # its SUPPORTS_GROUP_SIZE; () = not checked here
    note: str = ""
    # the checkpoint is rewritten at load into this format (qrecipe/kernels/ct_gptq.py,
    # gptq_awq.py; lossless) and runs on that format's kernel `via_kernel` (None: of the same
    # name)
    via: Optional[str] = None
    via_kernel: Optional[str] = None
    # why it decodes slower than the original model at batch 1, where it does (report.md)
    slower: str = ""
    # runs only checkpoints whose scheme quantizes activations or has float weights (FP8, W8A8,
    # FP4: compressed-tensors decompresses the weights and quantizes activations in forward)
    emulates: bool = False
    # runs only checkpoints with FP8 weights (compressed-tensors float-quantized, 8 bits)
    fp8: bool = False


def _k(name, hf, devices=("cuda",), **kw) -> Kernel:
    return Kernel(name=name, hf_backend=hf, devices=tuple(devices), **kw)


# the group sizes gptqmodel's tiled CUDA kernels take (ExLlamaV2, Marlin: SUPPORTS_GROUP_SIZE)
_G_TILED = (-1, 32, 64, 128)

# format -> kernels, in the order `auto` tries them on each device (first that fits wins).
# Names and capabilities read from gptqmodel 7.6's nn_modules/qlinear/*.py (SUPPORTS_DEVICES,
# SUPPORTS_DTYPES, SUPPORTS_BITS, SUPPORTS_GROUP_SIZE) and utils/cpp.py / machete.py (which are
# built, which download).
_SLOW_TORCH = ("its torch kernel dequantizes every weight on every forward, which at batch 1 "
               "costs more than the smaller weights save")
_SLOW_DENSE = ("its weights are dense at load, as the original's: the same matmuls, so the gap "
               "is measurement noise")
_AWQ = (
    _k("torch", "torch_awq", ("cpu", "cuda"), note="AwqTorchLinear: dequantize + matmul",
       slower=_SLOW_TORCH),
    _k("triton", "gemm_triton", dtypes=("float16",),
       note="AwqGEMMTritonLinear: Triton JIT, float16 only"),
    _k("marlin", "marlin", jit=True, min_cc=8.0, group_sizes=_G_TILED,
       note="AwqMarlinLinear: nvcc-built (~2 min)"),
    _k("gemm", "gemm", jit=True, note="AwqGEMMLinear: nvcc-built (~1 min once)"),
    _k("dequantized", "torch_awq", ("cpu",), note="weights dequantized to dense at load "
       "(qrecipe/kernels/dense.py): the original's speed and memory", slower=_SLOW_DENSE),
)
# AWQ Marlin on a 4-bit GPTQ or compressed-tensors checkpoint rewritten into the AWQ layout at
# load (qrecipe/kernels/gptq_awq.py, lossless): the Marlin that takes zero points, which GPTQ's
# does not (an asymmetric checkpoint otherwise decodes on the torch kernel or dense)
AWQ_MARLIN = replace(
    next(k for k in _AWQ if k.name == "marlin"), name="awq_marlin", via="awq",
    via_kernel="marlin", bits=(gptq_awq.BITS,),
    note="AwqMarlinLinear on the AWQ layout (rewritten at load, lossless): takes zero points")

_GPTQ = (
    _k("torch", "torch", ("cpu", "cuda"),
       note="TorchLinear: dequantize + matmul, plain torch; no build", slower=_SLOW_TORCH),
    _k("triton", "triton", bits=(2, 4, 8),
       note="TritonV2Linear: Triton JIT (no nvcc, no download)"),
    _k("marlin", "marlin", jit=True, min_cc=8.0, zero_points=False, bits=(4, 8),
       group_sizes=_G_TILED,
       note="MarlinLinear: nvcc-built (~2 min once); symmetric checkpoints only"),
    _k("exllama_v2", "exllama_v2", jit=True, bits=(4,), group_sizes=_G_TILED,
       note="ExllamaV2Linear: nvcc-built (~35 s once)"),
    _k("machete", "machete", jit=True, download=True, min_cc=9.0, bits=(4, 8),
       group_sizes=(-1, 64, 128),
       note="MacheteLinear: nvcc-built and downloads CUTLASS (fails offline)"),
    # CPU only: measured in benchmarks/cpu_kernels.py (docs/benchmarks.md, "CPU decode per
    # kernel"). gptqmodel's torch_fused is left out: it drops the zero points of an asymmetric
    # checkpoint (qrecipe's default) and its perplexity was 7e7 there.
    _k("torch_aten", "gptq_torch_aten", ("cpu",), bits=(4,), group_sizes=(16, 32, 64, 128),
       note="TorchAtenLinear: int4 weights through PyTorch's _weight_int4pack_mm_for_cpu, "
            "bfloat16 activations; no build"),
    _k("torch_int8", "torch_int8", ("cpu",), bits=(2, 4, 8), group_sizes=(-1, 16, 32, 64, 128),
       dtypes=("float16", "bfloat16", "float32"),
       note="TorchInt8Linear: weights as int8 at load, int8 matmul; no build"),
    _k("dequantized", "torch", ("cpu",), dtypes=("float16", "bfloat16", "float32"),
       note="weights dequantized to dense at load (qrecipe/kernels/dense.py): the original's "
            "speed and memory, the torch kernel's logits",
       slower=_SLOW_DENSE),
    AWQ_MARLIN,
)


def _rewritten(k: Kernel) -> Kernel:
    """GPTQ kernel k serving a compressed-tensors checkpoint rewritten into the GPTQ layout at
    load (qrecipe/kernels/ct_gptq.py): its capabilities, on the widths the rewrite takes."""
    bits = tuple(b for b in (k.bits or REWRITE_BITS) if b in REWRITE_BITS)
    return replace(k, via="gptq", bits=bits,
                   note=k.note.split(":")[0] + " on the GPTQ layout (rewritten at load, lossless)")


KERNELS: Dict[str, Tuple[Kernel, ...]] = {
    "gptq": _GPTQ,
    "awq": _AWQ,
    "compressed-tensors": (
        _k("compressed", None, ("cpu", "cuda"),
           note="compressed-tensors keeps packed int weights and dequantizes in forward"),
        _k("dequantized", None, ("cpu", "cuda"),
           note="weights dequantized to dense at load: fp16 speed, fp16 memory"),
        # FP8 / INT8 W8A8 / NVFP4 / MXFP4 (llm-compressor presets): transformers 5.17 has no
        # low-precision matmul for them on CPU (FP4 none on Hopper either), so their weights
        # are decompressed to dense at load and compressed-tensors quantizes and dequantizes
        # the activations in forward: the scheme's numerics at dense speed and memory.
        _k("emulated", None, ("cpu", "cuda"), emulates=True,
           note="weights decompressed to dense at load, activations quantized and dequantized "
                "in forward by compressed-tensors (no FP8/INT8/FP4 matmul)", slower=_SLOW_DENSE),
        # FP8 weights on Ada/Hopper: transformers' CompressedTensorsFP8Linear keeps the weights in
        # FP8, quantizes activations per row and multiplies with a row-wise scaled FP8 matmul
        # (torch.nn.functional.scaled_mm); asked for with CompressedTensorsConfig(
        # use_optimized_inference=True) (transformers 5.17 integrations/compressed_tensors.py)
        _k("fp8", None, ("cuda",), min_cc=8.9, fp8=True,
           note="FP8 weights kept, activations FP8 per row, FP8 tensor-core matmul "
                "(transformers' CompressedTensorsFP8Linear)"),
        # int weight-only schemes rewritten into the GPTQ layout at load
        *(_rewritten(k) for k in _GPTQ if k.name in ("torch", "triton", "exllama_v2", "marlin")),
        AWQ_MARLIN,  # ... or into the AWQ layout
    ),
    "bitsandbytes": (
        _k("bitsandbytes", None, ("cpu", "cuda"),
           note="bitsandbytes' own kernels (shipped compiled; CPU: torch fallback)"),
    ),
    # loaded by qrecipe/kernels/hqq.py (transformers 5.17 cannot): hqq's PYTORCH backend, or
    # dense weights. Its ATen backend needs the hqq_aten CUDA extension (built with nvcc).
    "hqq": (
        _k("torch", None, ("cpu", "cuda"), dtypes=("float16", "bfloat16", "float32"),
           note="HQQLinear, hqq's PYTORCH backend: dequantize + matmul; no build",
           slower=_SLOW_TORCH),
        _k("dequantized", None, ("cpu", "cuda"), dtypes=("float16", "bfloat16", "float32"),
           note="HQQLinear.dequantize() once at load into dense Linear layers "
                "(qrecipe/kernels/hqq.py): the original's speed and memory",
           slower=_SLOW_DENSE),
    ),
}

# `auto` on CUDA without JIT. Measured on the H100 (docs/benchmarks.md, "GPU: decode against
# fp16 per kernel"): see there.
_AUTO_NO_JIT = {"gptq": "torch", "awq": "torch", "compressed-tensors": "compressed",
                "bitsandbytes": "bitsandbytes", "hqq": "torch"}
# `auto` on CPU, tried in order before the above, by whether the CPU has fast bfloat16 matmuls
# (qrecipe/kernels/cpu.py): the fastest decode at batch 1 whose perplexity is the torch kernel's
# within 0.5%, measured on SmolLM2 GPTQ w4 g64 (benchmarks/cpu_kernels.py, docs/benchmarks.md,
# "CPU decode per kernel"). With AVX-512/AMX, PyTorch's int4 kernel decodes 1.9x the original
# bfloat16 model (+0.15% ppl: bfloat16 scales); on an AVX2-only CPU (a float32 job) its bfloat16
# activations make it 0.7x, and the dense weights (0.95x, the torch kernel's exact logits) win.
# gptqmodel's own torch kernel decodes at 0.07x. AWQ: the dense weights, measured for
# equivalence only.
_AUTO_CPU = {True: {"gptq": ("torch_aten", "dequantized"), "awq": ("dequantized",)},
             False: {"gptq": ("dequantized",), "awq": ("dequantized",)}}
# hqq on CPU: the dense weights give hqq's own perplexity (tests/test_hqq.py, within 1e-5) and
# skip its dequantize on every forward (SmolLM2 w4 g64: the quantized perplexity took 2.2x the fp
# model's time with hqq's kernel, the same machine and load, 2026-12-06).
_AUTO_CPU[True]["hqq"] = _AUTO_CPU[False]["hqq"] = ("dequantized",)
# `auto` on CUDA when allow_jit: the compiled GEMV/GEMM kernels, built once into the cache, in
# order, where nothing is measured (kernels/measured.py ranks them first where something is).
# gptqmodel's GPTQ Marlin refuses zero points (SUPPORTS_SYM = [True]), so an asymmetric GPTQ
# checkpoint (qrecipe's default, sym: false) tries ExLlamaV2, which takes both. compressed-tensors:
# its int weights in the GPTQ layout on ExLlamaV2, Marlin second.
_AUTO_JIT = {"gptq": ("marlin", "exllama_v2"), "awq": ("marlin",),
             "compressed-tensors": ("exllama_v2", "marlin")}


def auto_jit(fmt: str) -> Tuple[str, ...]:
    """The compiled kernels `auto` tries first for fmt when allow_jit, in order."""
    return _AUTO_JIT.get(fmt, ())


def names(fmt: Optional[str] = None) -> Tuple[str, ...]:
    """Every kernel name (of one format, or of all): hardware.kernel's allowed values."""
    fmts = [fmt] if fmt else list(KERNELS)
    out = ["auto"]
    for f in fmts:
        out += [k.name for k in KERNELS[f] if k.name not in out]
    return tuple(out)


def get(fmt: str, name: str) -> Kernel:
    for k in KERNELS[fmt]:
        if k.name == name:
            return k
    raise KeyError(name)


def loads_as(fmt: str, k: Kernel) -> Tuple[str, Kernel]:
    """The format a checkpoint of fmt is loaded in with kernel k, and the kernel of that format
    that runs it: (fmt, k) itself, or for a `via` kernel the rewritten layout's."""
    if not k.via:
        return fmt, k
    return k.via, get(k.via, k.via_kernel or k.name)


def _ranked_by_measurement(device: str, emulated: Optional[bool], fp8: Optional[bool]) -> bool:
    """Whether `auto` ranks a checkpoint's kernels by kernels/measured.py: on CUDA, for int
    weight-only checkpoints, the only kind measured (an FP8 or W8A8 one keeps its own order)."""
    return device == "cuda" and not emulated and not fp8


def measured_alternatives(fmt: str, device: str, cc: Optional[float], dtype: Optional[str],
                          facts: Dict[str, Any]) -> list:
    """What `auto` ranked this checkpoint's kernels by (facts: saved_facts()), for the report;
    [] where it ranks by no measurement."""
    if not _ranked_by_measurement(device, facts.get("emulated"), facts.get("fp8")):
        return []
    return measured.alternatives(fmt, facts.get("sym"), cc, dtype, facts.get("bits"))


def resolve(fmt: str, device: str, kernel: str = "auto", allow_jit: bool = False,
            cc: Optional[float] = None, dtype: Optional[str] = None,
            sym: Optional[bool] = None, bits: Optional[int] = None,
            group_size: Optional[int] = None, convertible: bool = True,
            fast_bf16: Optional[bool] = None, emulated: Optional[bool] = None,
            fp8: Optional[bool] = None) -> Kernel:
    """The kernel a checkpoint of `fmt` runs with on `device` (cc: CUDA compute capability, None
    when unknown; sym, bits, group_size: the checkpoint's, None when not known; convertible:
    False when its scheme cannot be rewritten for a `via` kernel; fast_bf16: whether the CPU has
    fast bfloat16 matmuls, read from it when None; emulated: whether its scheme quantizes
    activations or has float weights, None when not known; fp8: whether its weights are FP8).
    Raises QRecipeError for an
    unknown name, one that does not run here or on this checkpoint, or one that needs a compile
    while allow_jit is false."""
    if fmt not in KERNELS:
        raise QRecipeError("no kernel table for this checkpoint format", key="format",
                           value=fmt, allowed=FORMATS)
    ck = _Checkpoint(device, cc, dtype, sym, bits, group_size, convertible, emulated, fp8)
    if kernel == "auto":
        # the compiled kernels were measured on Hopper (docs); below Ampere auto keeps no-build
        jit_ok = allow_jit and device == "cuda" and (cc is None or cc >= 8.0)
        fast = cpu_fast_bf16() if fast_bf16 is None else fast_bf16
        cpu = _AUTO_CPU[fast is not False].get(fmt, ()) if device == "cpu" else ()
        emulated = ("emulated",) if fmt == "compressed-tensors" and ck.emulated else ()
        # FP8 weights: the FP8 matmul first where the GPU has one (misfit checks cc)
        emulated = ("fp8",) * bool(ck.fp8 and emulated) + emulated
        tries = [*(auto_jit(fmt) if jit_ok else ()), *cpu, *emulated, _AUTO_NO_JIT[fmt]]
        if _ranked_by_measurement(device, ck.emulated, ck.fp8):
            tries = list(measured.ranked(fmt, sym, cc, _cuda_candidates(fmt, jit_ok, tries),
                                         dtype, bits))
        for name in tries:
            k = get(fmt, name)
            if ck.misfit(k) is None:
                return k
        return fallback(fmt)
    try:
        k = get(fmt, kernel)
    except KeyError:
        raise QRecipeError(f"unknown kernel for {fmt} checkpoints", key="hardware.kernel",
                           value=kernel, allowed=names(fmt)) from None
    why = ck.misfit(k)
    if why:
        raise QRecipeError(f"kernel {kernel} {why}", key="hardware.kernel", value=kernel,
                           allowed=ck.usable(fmt, allow_jit))
    if k.jit and not allow_jit:
        raise QRecipeError(f"kernel {kernel} is compiled with nvcc on first use"
                           + (" and downloads CUTLASS" if k.download else ""),
                           key="hardware.kernel", value=kernel,
                           allowed=ck.usable(fmt, False),
                           hint="set hardware.allow_jit=true to build it once into the cache")
    return k


def _cuda_candidates(fmt: str, jit_ok: bool, tries: list) -> Tuple[str, ...]:
    """The kernels auto may try on CUDA: its fixed order first, then every other kernel of fmt
    that runs on CUDA, needs no download, is not an emulation (chosen only for checkpoints that
    need it, already in `tries`) and, unless jit_ok, no build."""
    more = [k.name for k in KERNELS[fmt] if "cuda" in k.devices and not k.download
            and not k.emulates and (jit_ok or not k.jit) and k.name not in tries]
    return tuple(tries) + tuple(more)


@dataclass(frozen=True)
class _Checkpoint:
    """Where a checkpoint is to run and what is known of it: what a kernel must fit."""
    device: str
    cc: Optional[float] = None
    dtype: Optional[str] = None
    sym: Optional[bool] = None
    bits: Optional[int] = None
    group_size: Optional[int] = None
    convertible: bool = True
    emulated: Optional[bool] = None
    fp8: Optional[bool] = None

    def misfit(self, k: Kernel) -> Optional[str]:
        """Why kernel k cannot run it, None when it can."""
        if self.device not in k.devices:
            return f"does not run on {self.device}"
        if self.device == "cuda" and self.cc is not None and self.cc < k.min_cc:
            return f"needs compute capability >= {k.min_cc} (this GPU: {self.cc})"
        if self.dtype and self.dtype not in ("auto", "float32") and self.dtype not in k.dtypes:
            return f"does not run in {self.dtype}"
        if self.sym is False and not k.zero_points:
            return "runs symmetric checkpoints only (this one has zero points: sym false)"
        if self.bits is not None and k.bits and self.bits not in k.bits:
            return f"runs {'/'.join(map(str, k.bits))}-bit weights only (this one: {self.bits})"
        if self.group_size is not None and k.group_sizes and \
                self.group_size not in k.group_sizes:
            return (f"takes group sizes {', '.join(map(str, k.group_sizes))} only "
                    f"(this one: {self.group_size})")
        if k.via and not self.convertible:
            return f"needs an int weight-only scheme to rewrite into the {k.via} layout"
        if k.emulates and self.emulated is False:
            return "runs weight-and-activation or float schemes only (this one: int weights)"
        if k.fp8 and not self.fp8:
            return "runs FP8-weight checkpoints only"
        return None

    def usable(self, fmt: str, allow_jit: bool) -> str:
        ok = [k.name for k in KERNELS[fmt] if self.misfit(k) is None
              and (allow_jit or not k.jit)]
        return ", ".join(["auto"] + ok)


def fallback(fmt: str) -> Kernel:
    """The kernel `auto` ends on for a format: no build, no download, no rewrite."""
    return get(fmt, _AUTO_NO_JIT[fmt])


def _always_jit(name: str) -> bool:
    ks = [k for f in KERNELS for k in KERNELS[f] if k.name == name]
    return bool(ks) and all(k.jit for k in ks)


def check(kernel: str, allow_jit: bool) -> None:
    """Config-time check (no format known yet): the name exists, and is not a compiled kernel
    while allow_jit is false. Device and format specific checks happen in `resolve`."""
    if kernel not in names():
        raise QRecipeError("unknown kernel", key="hardware.kernel", value=kernel,
                           allowed=names())
    if _always_jit(kernel) and not allow_jit:
        raise QRecipeError(f"kernel {kernel} is compiled with nvcc on first use",
                           key="hardware.kernel", value=kernel,
                           allowed=", ".join(n for n in names() if not _always_jit(n)),
                           hint="set hardware.allow_jit=true to build it once into the cache")


def checkpoint_format(model_dir: Path) -> Optional[str]:
    """The format of a saved checkpoint, from config.json's quantization_config (None: dense)."""
    conf = json.loads((Path(model_dir) / "config.json").read_text())
    q = conf.get("quantization_config") or {}
    method = str(q.get("quant_method", "")).lower()
    if not method:
        return None
    return {"gptq": "gptq", "awq": "awq", "compressed-tensors": "compressed-tensors",
            "bitsandbytes": "bitsandbytes"}.get(method, method)


def saved_facts(fmt: str, saved: Dict[str, Any]) -> Dict[str, Any]:
    """What the kernel table checks, read from a checkpoint's saved quantization_config:
    resolve()'s sym, bits, group_size and convertible."""
    if fmt == "compressed-tensors":
        emulated = {"emulated": True} if _emulated(saved) else {}
        emulated.update({"fp8": True} if _fp8(saved) else {})
        try:
            s = ct_gptq.scheme(saved)
        except QRecipeError:
            return {"convertible": False, **emulated}
        return {"sym": s.sym, "bits": s.bits, "group_size": s.group_size, **emulated}
    bits, group = saved.get("bits"), saved.get("group_size")
    return {"sym": saved.get("sym"), "bits": int(bits) if bits is not None else None,
            "group_size": int(group) if group is not None else None,
            # the AWQ layout has no act-order (kernels/gptq_awq.py): only GPTQ has a `via` kernel
            **({"convertible": not saved.get("desc_act")} if fmt == "gptq" else {})}


# compressed-tensors' formats of float weights (FP8; NVFP4 and MXFP4 packed two per byte)
_FLOAT_FORMATS = ("float-quantized", "nvfp4-pack-quantized", "mxfp4-pack-quantized")


def _emulated(saved: Dict[str, Any]) -> bool:
    """Whether a compressed-tensors quantization_config quantizes activations or stores float
    weights (the `emulated` kernel's checkpoints)."""
    groups = (saved.get("config_groups") or {}).values()
    return any(g.get("input_activations") or (g.get("format") or saved.get("format"))
               in _FLOAT_FORMATS for g in groups)


def _fp8(saved: Dict[str, Any]) -> bool:
    """Whether a compressed-tensors quantization_config stores 8-bit float weights (the `fp8`
    kernel's checkpoints)."""
    groups = (saved.get("config_groups") or {}).values()
    return any((g.get("weights") or {}).get("type") == "float"
               and int((g.get("weights") or {}).get("num_bits") or 0) == 8 for g in groups)


def configure_jit_cache(cache_dir: Path) -> Dict[str, str]:
    """Point gptqmodel's extension builds into qrecipe's cache (one compile per machine) and keep
    it offline (never download CUTLASS). Must run before gptqmodel is imported; a value the user
    set wins."""
    root = Path(cache_dir).expanduser() / "kernels"
    env = {"GPTQMODEL_TORCH_EXTENSIONS_DIR": str(root / "torch_extensions"),
           "GPTQMODEL_CACHE_DIR": str(root / "gptqmodel"),
           "GPTQMODEL_OFFLINE": "1"}
    for k, v in env.items():
        os.environ.setdefault(k, v)
    return {k: os.environ[k] for k in env}


def loaded_kernels(model) -> Dict[str, int]:
    """Class name -> count of the quantized linear layers actually in a loaded model: what ran,
    read back from the modules rather than echoed from the request."""
    import torch
    counts: Dict[str, int] = {}
    for mod in model.modules():
        cls = type(mod)
        name = cls.__name__
        if getattr(mod, "qrecipe_dequantized", False):  # the `dequantized` kernel's layers
            counts["Linear[dequantized]"] = counts.get("Linear[dequantized]", 0) + 1
            continue
        quant = hasattr(cls, "QUANT_TYPE") or "bitsandbytes" in cls.__module__ or \
            cls.__module__.startswith("hqq.") or \
            "compressed_tensors" in cls.__module__ or (
                isinstance(mod, torch.nn.Linear) and hasattr(mod, "quantization_scheme"))
        if quant and not list(mod.children()):
            if isinstance(mod, torch.nn.Linear) and hasattr(mod, "quantization_scheme") \
                    and name == "Linear":
                status = getattr(mod, "quantization_status", None)
                name = f"Linear[compressed-tensors {getattr(status, 'value', status)}]"
            counts[name] = counts.get(name, 0) + 1
    return counts
