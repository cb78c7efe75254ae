"""Prebuild gptqmodel's nvcc-compiled CUDA extensions into qrecipe's kernel cache, once per machine
image (`qrecipe kernels build`), instead of inside the first job that needs one.

How gptqmodel 7.6 builds them (gptqmodel/utils/cpp.py): each extension is a module-level
``TorchOpsJitExtension``; its ``load()`` imports the library from
``$GPTQMODEL_TORCH_EXTENSIONS_DIR/<subdir>/<fingerprint>/<name>.so`` when one is there and else
compiles it with torch.utils.cpp_extension.load (nvcc), under a cross-process file lock. The
fingerprint hashes the sources, flags, torch and CUDA versions and the visible GPUs' compute
capability (or TORCH_CUDA_ARCH_LIST), so a build is for this GPU and this stack. Nothing is
built at import; a build runs on the first call of:

- ``gptqmodel.quantization.gptq_cuda.block_update_available()``: GPTQ's fused block update,
  called by GPTQ.quantize on CUDA per layer unless GPTQMODEL_DISABLE_GPTQ_CUDA (qrecipe sets that
  without hardware.allow_jit: backends/gptqmodel/adapter.py). The 20.9 s first layer.
- ``gptqmodel.extension.load(name=...)``: the public prebuild API for the reload kernels, the
  one their QuantLinear classes call (validate_once -> is_available(name)). Marlin is two
  extensions, one per activation dtype: a checkpoint's dtype picks which one a reload builds.

AWQ quantizing builds nothing (qrecipe packs with AwqTorchLinear, backend AWQ_TORCH); CUDA jobs
pack on the GPU in torch (pack_impl "gpu"), so the CPU pack_block extension is not built there.

``EXTENSIONS`` is the one table of what is built and by which gptqmodel function
(tests/test_kernels_build.py pins every entry against the installed gptqmodel); which kernels a
profile may use comes from qrecipe/kernels/table.py (``resolve``, ``auto_jit``). Planning and the
cache check import neither torch nor gptqmodel; only ``require_cuda`` and ``call_builder`` do.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from qrecipe import cuda
from qrecipe.errors import QRecipeError
from qrecipe.kernels.table import FORMATS, KERNELS, auto_jit, get, names, resolve


@dataclass(frozen=True)
class Extension:
    name: str  # gptqmodel's name for it (gptqmodel.extension.available_extensions())
    builder: str  # "module:function" that builds it on first call, or loads the cached build
    handle: str  # "module:attribute": the TorchOpsJitExtension holding its build settings
    subdir: str  # its folder under GPTQMODEL_TORCH_EXTENSIONS_DIR (default_torch_ops_build_root)
    binary: str  # the library: <subdir>/<fingerprint>/<binary>.so
    dtype: Optional[str] = None  # the activation dtype it serves (Marlin: one build per dtype)


LOAD = "gptqmodel.extension:load"  # load(name="all", *, use_cache=True) -> {name: bool}
_U = "gptqmodel.utils."
EXTENSIONS: Tuple[Extension, ...] = (
    Extension("gptq_block", "gptqmodel.quantization.gptq_cuda:block_update_available",
              "gptqmodel.quantization.gptq_cuda:_EXTENSION", "gptq_block",
              "gptqmodel_gptq_block_ops"),
    Extension("exllamav2", LOAD, _U + "exllamav2:_EXLLAMAV2_GPTQ_TORCH_OPS_EXTENSION",
              "exllamav2", "gptqmodel_exllamav2_ops"),
    Extension("marlin_fp16", LOAD, _U + "marlin:_MARLIN_FP16_TORCH_OPS_EXTENSION", "marlin_fp16",
              "gptqmodel_marlin_fp16_ops", "float16"),
    Extension("marlin_bf16", LOAD, _U + "marlin:_MARLIN_BF16_TORCH_OPS_EXTENSION", "marlin_bf16",
              "gptqmodel_marlin_bf16_ops", "bfloat16"),
    Extension("awq", LOAD, _U + "awq:_AWQ_TORCH_OPS_EXTENSION", "awq", "gptqmodel_awq_ops"),
    Extension("machete", LOAD, _U + "machete:_MACHETE_TORCH_OPS_EXTENSION", "machete",
              "gptqmodel_machete_ops"),
)
BY_NAME: Dict[str, Extension] = {e.name: e for e in EXTENSIONS}
_MARLIN = ("marlin_fp16", "marlin_bf16")
# (format, qrecipe kernel) -> the extensions its QuantLinear loads; a `via` kernel (a checkpoint
# rewritten at load) loads those of (via, via_kernel or name).
RELOAD: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("gptq", "marlin"): _MARLIN, ("gptq", "exllama_v2"): ("exllamav2",),
    ("gptq", "machete"): ("machete",), ("awq", "marlin"): _MARLIN, ("awq", "gemm"): ("awq",)}
# checkpoint format -> what quantizing into it builds on CUDA with hardware.allow_jit, for the
# methods of QUANTIZE_METHODS only: gptqmodel calls the block update from GPTQ's Hessian solve
# (gptq.py, where Hinv exists), so its RTN into the same format builds nothing
QUANTIZE: Dict[str, Tuple[str, ...]] = {"gptq": ("gptq_block",)}
QUANTIZE_METHODS = ("gptq",)
# the formats some kernel of which is nvcc-built: what `--format` takes
JIT_FORMATS = tuple(f for f in FORMATS if any(k.jit for k in KERNELS[f]))
DTYPES = tuple(BY_NAME[n].dtype for n in _MARLIN)
# Linux; gptqmodel also looks for .pyd/.dylib/.dll
_SUFFIX = ".so"


def extensions_of(fmt: str, kernel: str) -> Tuple[Extension, ...]:
    """The gptqmodel extensions kernel `kernel` of format `fmt` loads (none: no build)."""
    k = get(fmt, kernel)
    if not k.jit:
        return ()
    return tuple(BY_NAME[n] for n in RELOAD[(k.via or fmt, k.via_kernel or kernel)])


@dataclass(frozen=True)
class Job:
    ext: Extension
    uses: Tuple[str, ...]  # what needs it: "quantize gptq", "reload awq marlin", ...


def _fits(fmt: str, kernel: str, cc: Optional[float]) -> bool:
    try:
        resolve(fmt, "cuda", kernel, allow_jit=True, cc=cc, fast_bf16=True)
    except QRecipeError:
        return False
    return True


def reload_kernels(fmt: str, allow_jit: bool, kernel: str, cc: Optional[float]) -> List[str]:
    """The nvcc-built kernels a reload of a `fmt` checkpoint may pick on a GPU of compute
    capability cc (None: any): every one `auto` tries with allow_jit (where auto tries compiled
    kernels on this GPU at all: its pick by the measured table first, then its fixed order for
    GPUs nobody measured), plus `kernel` when it names a compiled one."""
    out: List[str] = []
    auto = resolve(fmt, "cuda", "auto", allow_jit=True, cc=cc, fast_bf16=True)
    if allow_jit and auto.jit:
        out += [auto.name] + [n for n in auto_jit(fmt) if n != auto.name and _fits(fmt, n, cc)]
    if kernel != "auto" and kernel in names(fmt) and get(fmt, kernel).jit \
            and kernel not in out and _fits(fmt, kernel, cc):
        out.append(kernel)
    return out


def plan(formats: Sequence[str], allow_jit: bool, kernel: str = "auto",
         dtypes: Sequence[str] = DTYPES, cc: Optional[float] = None) -> List[Job]:
    """What `kernels build` builds for a CUDA profile: quantizing's extensions (with allow_jit)
    and every reload kernel of `formats` it may use, in dtypes. Refuses a kernel whose build
    downloads (gptqmodel runs offline in qrecipe)."""
    uses: Dict[str, List[str]] = {}
    for fmt in formats:
        for n in QUANTIZE.get(fmt, ()) if allow_jit else ():
            uses.setdefault(n, []).append(f"quantize {fmt}")
        for kname in reload_kernels(fmt, allow_jit, kernel, cc):
            if get(fmt, kname).download:
                raise QRecipeError(f"kernel {kname} downloads CUTLASS while it builds; qrecipe "
                                   "keeps gptqmodel offline (GPTQMODEL_OFFLINE=1)",
                                   key="hardware.kernel", value=kname,
                                   allowed=", ".join(n for n in names() if n != kname))
            for e in extensions_of(fmt, kname):
                if e.dtype is None or e.dtype in dtypes:
                    uses.setdefault(e.name, []).append(f"reload {fmt} {kname}")
    return [Job(e, tuple(uses[e.name])) for e in EXTENSIONS if e.name in uses]


def artefacts(root: Path, ext: Extension) -> Dict[str, int]:
    """The built libraries of ext under the extensions dir root (any fingerprint) -> mtime_ns.
    Any fingerprint: whether this torch/CUDA/GPU's build is among them only gptqmodel can tell
    (it hashes torch's version and the visible GPUs); a build of another stack counts here."""
    base = Path(root) / ext.subdir
    if not base.is_dir():
        return {}
    return {str(p): p.stat().st_mtime_ns
            for p in sorted(base.glob(f"*/{ext.binary}*{_SUFFIX}")) if p.is_file()}


@dataclass(frozen=True)
class Result:
    status: str  # "built", "already built" or "failed"
    seconds: float
    reason: str = ""


def build_one(ext: Extension, root: Path,
              call: Callable[[Extension], Tuple[bool, str]]) -> Result:
    """Build or load ext through gptqmodel (call), and tell which of the two happened from the
    libraries under root before and after."""
    before = artefacts(root, ext)
    t0 = time.perf_counter()
    try:
        ok, reason = call(ext)
    except Exception as e:  # gptqmodel raises for a failed build: one line of it, the run goes on
        ok, reason = False, one_line(str(e) or type(e).__name__, ext.name)
    secs = time.perf_counter() - t0
    after = artefacts(root, ext)
    if not ok:
        return Result("failed", secs, reason or "gptqmodel could not build it (its log above)")
    if not after:
        return Result("failed", secs, f"loaded, but not from {Path(root) / ext.subdir} "
                                      "(a GPTQMODEL_*_BUILD_ROOT set?)")
    return Result("already built" if after == before else "built", secs)


def one_line(message: str, name: str) -> str:
    """gptqmodel's failure message in one line: the named extension's line of
    extension.load's summary, without the build-dir diagnostics it appends after ' | '."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    mine = [ln[len(f"- {name}: "):] for ln in lines if ln.startswith(f"- {name}: ")]
    text = (mine or lines or [""])[0].split(" | ")[0]
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def _attr(spec: str):
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)  # deferred: gptqmodel imports torch


def call_builder(ext: Extension) -> Tuple[bool, str]:
    """Run gptqmodel's own build of ext: (ok, why not). GPTQMODEL_TORCH_EXTENSIONS_DIR must be
    set before gptqmodel is first imported (table.configure_jit_cache)."""
    fn = _attr(ext.builder)
    if ext.builder == LOAD:
        return bool(fn(name=ext.name).get(ext.name)), ""
    if fn():
        return True, ""
    try:
        return False, one_line(_attr(ext.handle).last_error_message(), ext.name)
    except Exception:  # the reason is a courtesy: the failure itself is known
        return False, ""


# gptqmodel's package __init__ imports its whole model zoo, transformers with it: the builders
# took 5.5-6.0 s to import through it on CPU-A, 0.3 s without it. On a fresh H100 host the
# background child spent ~20 s importing before nvcc started while the job's first layer waited
# for the block update (24.5 s); without the __init__, nvcc started ~5 s after the child and the
# first layer took 5.6 s (docs/benchmarks.md, "a machine that never built its kernels"). The
# builders and their handles live in leaf modules (quantization/gptq_cuda, extension,
# utils/{cpp,exllamav2,marlin,awq,machete}) that import only torch and
# gptqmodel.utils.{cpp,env,logger}: read in 7.6.0's source, pinned by tests/test_kernels_build.py.
# A process that only builds imports them under empty parent packages. The build fingerprint
# hashes sources, flags, torch, CUDA and the GPU, not what the package __init__ sets up, so the
# job's full import finds the same library.
LIGHT_IMPORT_VERSIONS = ("7.6.0",)
_PARENTS = ("gptqmodel", "gptqmodel.utils", "gptqmodel.quantization")


def light_parents() -> bool:
    """Empty stand-ins for gptqmodel's parent packages in sys.modules, so that importing a leaf
    module runs no package __init__: True when set. Only on a gptqmodel of
    LIGHT_IMPORT_VERSIONS and before anything of gptqmodel is imported; for processes that
    build and do nothing else with gptqmodel (the stand-ins stay for the process's life)."""
    if any(name in sys.modules for name in _PARENTS):
        return False
    try:
        if importlib.metadata.version("gptqmodel") not in LIGHT_IMPORT_VERSIONS:
            return False
    except importlib.metadata.PackageNotFoundError:
        return False
    spec = importlib.util.find_spec("gptqmodel")  # finds the folder; runs nothing
    if spec is None or not spec.submodule_search_locations:
        return False
    root = Path(list(spec.submodule_search_locations)[0])
    for name in _PARENTS:
        stub = types.ModuleType(name)
        stub.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        stub.__package__ = name
        sys.modules[name] = stub
    return True


def import_builders(jobs: Sequence[Job], light: bool = True) -> None:
    """Import the gptqmodel modules the jobs call, so that no kernel's seconds include the
    import of gptqmodel (seconds on a cold machine); light: without gptqmodel's package
    __init__ (light_parents), for a process that only builds."""
    if light:
        light_parents()
    for spec in sorted({j.ext.builder.split(":")[0] for j in jobs}):
        importlib.import_module(spec)  # deferred: gptqmodel imports torch


def require_cuda() -> Tuple[float, str]:
    """(compute capability, GPU name) of CUDA device 0; a one-line refusal without one."""
    import torch  # deferred: torch, only where something is built

    if not torch.cuda.is_available():
        raise QRecipeError("no CUDA GPU on this machine: gptqmodel's kernels are compiled with "
                           "nvcc for the GPU they run on",
                           hint="run it on a GPU machine of the image the jobs use; "
                                "--dry-run lists what it would build")
    return cuda.capability(0), torch.cuda.get_device_name(0)


def line(name: str, status: str, seconds: Optional[float], detail: str) -> str:
    secs = f"{seconds:7.1f} s" if seconds is not None else " " * 9
    return f"{name:<12} {status:<14} {secs}  {detail}".rstrip()


def run_build(jobs: Sequence[Job], root: Path,
              call: Callable[[Extension], Tuple[bool, str]] = call_builder,
              out: Callable[[str], None] = print) -> int:
    """Build every job, one line each; 0 when all are built, 1 otherwise."""
    failed = 0
    for j in jobs:
        r = build_one(j.ext, root, call)
        failed += r.status == "failed"
        out(line(j.ext.name, r.status, r.seconds, r.reason or ", ".join(j.uses)))
    return 1 if failed else 0
