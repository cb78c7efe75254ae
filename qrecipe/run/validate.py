"""Every check that can be made before a weight is loaded.

Composition already rejected unknown keys and wrong types (the schema). This module checks what
depends on several fields: the method/backend pair, the bits and group sizes the backend
supports, group sizes against the model's layer widths (read from metadata only), files that must
exist, and optional packages. Each failure is one QRecipeError naming key, value and what is
allowed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from qrecipe.backends import BACKENDS, Backend, MethodSupport
from qrecipe.errors import QRecipeError
from qrecipe.inputs.models import DTYPES, ModelInfo, describe
from qrecipe.inputs.texts import TextSpec, check_spec
from qrecipe.paths import is_package_path

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")


@dataclass
class Plan:
    backend: Backend
    support: MethodSupport
    model: ModelInfo


def validate(cfg) -> Plan:
    backend = BACKENDS.get(cfg.method.backend)()
    support = _method_support(backend, cfg.method.name)
    _check_bits(cfg.bits, support, cfg.method.name, backend.name)
    _check_hardware(cfg.hardware, support, cfg.method.name, backend.name, _sym(cfg.method),
                    int(cfg.bits.width), int(cfg.bits.group_size))
    if cfg.model.dtype not in DTYPES:
        raise QRecipeError("unknown dtype", key="model.dtype", value=cfg.model.dtype,
                           allowed=DTYPES)
    if support.needs_calibration:
        from qrecipe.inputs.calibration import check as check_calibration
        check_calibration(cfg.calibration)
    if cfg.eval.enabled:
        check_spec(TextSpec.from_cfg("eval", cfg.eval))
        for k in ("seq_len", "stride", "batch_size"):
            if cfg.eval[k] < 1:
                raise QRecipeError("must be at least 1", key=f"eval.{k}", value=cfg.eval[k])
        from qrecipe.evaluation.tasks import check as check_tasks
        check_tasks(cfg.eval)
    backend.check_installed()
    backend.preflight(cfg.method.name, cfg.bits.width, cfg.bits.group_size, cfg.hardware.device)
    info = _describe(cfg.model)  # metadata only; raises for a missing file or unknown source
    _check_divides(cfg.bits.group_size, info, support)
    return Plan(backend=backend, support=support, model=info)


def _describe(model) -> ModelInfo:
    from qrecipe.inputs.weights import check_model
    check_model(model)  # loading safety: safetensors only unless model.allow_pickle; no corrupt
    try:
        return describe(model)
    except QRecipeError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise QRecipeError(f"cannot read the model's shapes ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''})",
                           key="model.path", value=model.path) from None


def _method_support(backend: Backend, method: str) -> MethodSupport:
    if method in backend.support:
        return backend.support[method]
    others = [n for n in BACKENDS.names() if method in BACKENDS.get(n).support]
    raise QRecipeError(f"backend {backend.name} does not implement method {method}",
                       key="method.backend", value=backend.name,
                       allowed=f"for method {method}: {', '.join(others) or 'none'}")


def _check_bits(bits, support: MethodSupport, method: str, backend: str) -> None:
    if bits.width not in support.bits:
        raise QRecipeError(f"{method} via {backend} does not support this bit width",
                           key="bits.width", value=bits.width, allowed=support.bits)
    if support.group_sizes is None:
        log.info("bits.group_size=%s is not used: %s fixes it (%s)", bits.group_size, backend,
                 support.note or "library default")
    elif bits.group_size not in support.group_sizes:
        raise QRecipeError(f"{method} via {backend} does not support this group size",
                           key="bits.group_size", value=bits.group_size,
                           allowed=f"{', '.join(map(str, support.group_sizes))} (-1: per channel)")


def _sym(method) -> Optional[bool]:
    """Whether the checkpoint will be symmetric (a kernel without zero points needs it)."""
    if method.name == "awq":
        return not bool(method.get("zero_point", True))
    return bool(method.sym) if method.get("sym") is not None else None


def _check_hardware(hw, support: MethodSupport, method: str, backend: str,
                    sym: Optional[bool] = None, bits: Optional[int] = None,
                    group_size: Optional[int] = None) -> None:
    if hw.device not in DEVICES:
        raise QRecipeError("unknown device", key="hardware.device", value=hw.device,
                           allowed=DEVICES)
    if hw.device not in support.devices:
        raise QRecipeError(f"{method} via {backend} does not run on this device",
                           key="hardware.device", value=hw.device, allowed=support.devices,
                           hint=support.note or None)
    from qrecipe.kernels import table as kernels
    kernel, allow_jit = hw.get("kernel", "auto"), bool(hw.get("allow_jit", False))
    kernels.check(kernel, allow_jit)
    if kernel != "auto":
        kernels.resolve(kernels.format_of(backend, method), hw.device, kernel, allow_jit,
                        sym=sym, bits=bits, group_size=group_size)
    if hw.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise QRecipeError("no CUDA device is visible", key="hardware.device",
                               value=hw.device, hint="use hardware=cpu on this machine")


def _check_divides(group_size: int, info: ModelInfo, support: MethodSupport) -> None:
    if support.group_sizes is None or group_size == -1:
        return
    for name, width in info.linear_in_features().items():
        if width % group_size:
            widths = info.linear_in_features().values()
            ok = [g for g in support.group_sizes if g == -1 or all(w % g == 0 for w in widths)]
            raise QRecipeError(
                f"group size does not divide the model's {name} ({width})",
                key="bits.group_size", value=group_size,
                allowed=f"{', '.join(map(str, ok))} for this model")


def resolve_paths(cfg) -> None:
    """Relative file paths are taken from the directory qrecipe was started in (Hydra does not
    change directory: hydra.job.chdir=false), and frozen as absolute paths in the lock file.
    pkg://PACKAGE/FILE paths name files shipped inside a package and are kept as written."""
    from hydra.utils import get_original_cwd
    try:
        base = Path(get_original_cwd())
    except ValueError:  # not under Hydra (tests calling the runner directly)
        base = Path.cwd()

    def absolute(p: str) -> str:
        if is_package_path(p) or Path(p).expanduser().is_absolute():
            return p
        return str((base / p).resolve())

    for section in ("calibration", "eval"):
        p = cfg[section].get("path")
        if cfg[section].source == "local" and p:
            cfg[section].path = absolute(p)
    for m in cfg.calibration.get("mix") or []:  # mixed sources: the same rule per entry
        if m.get("source", cfg.calibration.source) == "local" and m.get("path"):
            m.path = absolute(m.path)
    if cfg.model.source in ("local", "gguf"):
        cfg.model.path = absolute(cfg.model.path)
