"""Every check that can be made before a weight is loaded.

Composition already rejected unknown keys and wrong types (the schema). This module checks what
depends on several fields: the method/backend pair, the bits and group sizes the backend
supports, group sizes against the model's layer widths (read from metadata only), files that must
exist, optional packages, and, with the hub turned off (HF_HUB_OFFLINE), that every hub model,
data set and task the job needs is in the local cache (qrecipe/inputs/offline.py). Each failure
is one QRecipeError naming key, value and what is allowed.

The config is checked anywhere; the job's hardware only where the job runs. A dry run and
`qrecipe validate` check a GPU recipe on a laptop or a login node: a visible CUDA device is
asked for by a real run only (here, before any weight), and memory and disk by the runner's
resource check (qrecipe/run/resources.py) after this.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from qrecipe.backends import BACKENDS, Backend, MethodSupport
from qrecipe.backends.base import require_cuda
from qrecipe.backends.capabilities import DEVICES, auto_backend, backends_for, dividing, undivided
from qrecipe.errors import QRecipeError
from qrecipe.evaluation.tasks import LOCAL_TASKS, task_names
from qrecipe.evaluation.tasks import check as check_tasks
from qrecipe.inputs import offline
from qrecipe.inputs.calibration import check as check_calibration
from qrecipe.inputs.calibration import specs as calibration_specs
from qrecipe.inputs.models import DTYPES, ModelInfo, describe
from qrecipe.inputs.texts import TextSpec, check_spec
from qrecipe.inputs.weights import check_model
from qrecipe.kernels import table as kernels
from qrecipe.paths import is_package_path

log = logging.getLogger(__name__)


@dataclass
class Plan:
    backend: Backend
    support: MethodSupport
    model: ModelInfo
    # What was left for the job's own machine (None: everything was checked here).
    unchecked: Optional[str] = None


def validate(cfg, here: Optional[bool] = None, hub: bool = True) -> Plan:
    """here: also check the hardware the job needs on this machine (a visible CUDA device);
    None: a real run does (dry_run false), a dry run does not. hub: also refuse, when this
    machine is offline, hub inputs it has no copy of (False: planning a job that runs
    elsewhere)."""
    here = not cfg.get("dry_run", False) if here is None else here
    settle_backend(cfg)
    backend = BACKENDS.get(cfg.method.backend)()
    support = backend.support_for(cfg.method.name)
    backend.check_method(cfg.method)
    _check_bits(cfg.bits, support, cfg.method.name, backend.name)
    _check_hardware(cfg.hardware, support, cfg.method.name, backend.name,
                    checkpoint_sym(cfg.method), int(cfg.bits.width), int(cfg.bits.group_size))
    if here:
        require_cuda(cfg.hardware.device)
    if cfg.model.dtype not in DTYPES:
        raise QRecipeError("unknown dtype", key="model.dtype", value=cfg.model.dtype,
                           allowed=DTYPES)
    reads_rows = backend.reads_rows(cfg.method)
    if reads_rows:
        check_calibration(cfg.calibration)
    if cfg.eval.enabled:
        check_spec(TextSpec.from_cfg("eval", cfg.eval))
        for k in ("seq_len", "stride", "batch_size"):
            if cfg.eval[k] < 1:
                raise QRecipeError("must be at least 1", key=f"eval.{k}", value=cfg.eval[k])
        check_tasks(cfg.eval)
    backend.check_installed()
    backend.check_versions(cfg.method.name)  # before any weight: one line, or a refusal
    backend.preflight(cfg.method.name, cfg.bits.width, cfg.bits.group_size, cfg.hardware.device)
    if hub:
        _check_hub(cfg, reads_rows)
    info = _describe(cfg.model)  # metadata only; raises for a missing file or unknown source
    backend.check_model(cfg.method, info)
    _check_divides(cfg.bits.group_size, info, support)
    unchecked = None if here else hardware_note(cfg.hardware.device)
    if unchecked:
        log.info(unchecked)
    return Plan(backend=backend, support=support, model=info, unchecked=unchecked)


def settle_backend(cfg) -> None:
    """`method.backend: auto` becomes the backend it stands for on the job's device
    (backends/capabilities.py AUTO_BACKEND), in the config itself: the lock, the report and a
    resume see the backend that ran."""
    if cfg.method.backend != "auto":
        return
    chosen = auto_backend(cfg.method.name, cfg.hardware.device)
    if chosen is None:
        raise QRecipeError("auto names no backend for this method on this device",
                           key="method.backend", value="auto",
                           allowed=", ".join(backends_for(cfg.method.name)))
    cfg.method.backend = chosen
    log.info("method.backend auto: %s for %s on %s (the faster measured)", chosen,
             cfg.method.name, cfg.hardware.device)


def hardware_note(device: str) -> str:
    """The one line that says what validation left for the job's own machine."""
    what = "a visible CUDA device, GPU memory and any kernel build" if device == "cuda" \
        else "RAM and disk"
    return f"hardware not checked here: {what} are checked when the job runs"


_LOCAL_TEXT = {"calibration": "offline, use calibration=local (the Jargon File shipped inside "
                              "qrecipe) or calibration=pydoc",
               "eval": "offline, use eval=wikitext2_local (the same WikiText-2 test text, "
                       "shipped inside qrecipe)"}


def _check_hub(cfg, needs_calibration: bool) -> None:
    """With the hub off, every hub input of the job is in the local cache (nothing fetched)."""
    offline.check_model(cfg.model)
    if needs_calibration:
        for spec, _ in calibration_specs(cfg.calibration):
            offline.check_text(spec.section, spec.source, spec.path, _LOCAL_TEXT["calibration"])
    if cfg.eval.enabled:
        offline.check_text("eval", cfg.eval.source, cfg.eval.get("path"), _LOCAL_TEXT["eval"])
        offline.check_tasks(task_names(cfg.eval), LOCAL_TASKS)


def _describe(model) -> ModelInfo:
    check_model(model)  # loading safety: safetensors only unless model.allow_pickle; no corrupt
    try:
        return describe(model)
    except QRecipeError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise QRecipeError(f"cannot read the model's shapes ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''})",
                           key="model.path", value=model.path) from None


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


def checkpoint_sym(method) -> Optional[bool]:
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
    kernel, allow_jit = hw.get("kernel", "auto"), bool(hw.get("allow_jit", False))
    kernels.check(kernel, allow_jit)
    if kernel != "auto":  # from the config alone (no compute capability: not asked here)
        kernels.resolve(support.format, hw.device, kernel, allow_jit,
                        sym=sym, bits=bits, group_size=group_size)


def _check_divides(group_size: int, info: ModelInfo, support: MethodSupport) -> None:
    if support.group_sizes is None:
        return
    widths = info.linear_in_features()
    for name, width in widths.items():
        if undivided(group_size, (width,)):
            ok = dividing(support.group_sizes, widths.values())
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
