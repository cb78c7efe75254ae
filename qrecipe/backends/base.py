"""What every backend adapter provides: its capabilities, its patches and one `quantize` call.

The capabilities are plain data (backends/capabilities.py) so ``run/validate.py`` can check a
recipe (bits, group size, device, installed packages, library versions) before any weight is
loaded; an adapter then only translates the request, runs its library, saves and describes.
Adapters import their heavy libraries inside `run`, never at module level: composing a config
must not import torch.
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

from qrecipe import cuda
from qrecipe.backends import patching
from qrecipe.backends.capabilities import MethodSupport, backends_for
from qrecipe.errors import QRecipeError
from qrecipe.recipes.meta import installed_version
from qrecipe.telemetry.overhead import timed_import

__all__ = ["BACKENDS", "Backend", "MethodSupport", "QuantizeRequest", "QuantizeResult",
           "SHARD_BYTES", "TRANSFORMERS", "require_cuda"]

# The largest weights file (its tensors' bytes; a tensor over it gets a file of its own) the
# adapters write (llm-compressor where the model's load converted no weights: its adapter's
# _shard_size says why). Each file's sha256 is computed on its own thread, right behind the
# writer. One sha256 stream runs at ~1.1 GB/s on the H100/H200 hosts, slower than gptqmodel's write
# (~2.6 GB/s), so what is left after the write is about the last file's hashing: the smaller the
# files, the shorter the wait. For 3.9 GB written like a 32-layer 7B GPTQ model: one file 2.3 s,
# 2 GiB files 1.0-1.5 s, 1 GiB files 0.4-0.5 s, 0.5 GiB files 0.26-0.31 s (docs/benchmarks.md,
# "GPU: shard size and the sha256 wait", benchmarks/hash_follow.py): 0.5 GiB, for 8 files of a 7B
# 4-bit checkpoint (a 70B's 38 GB: 72). A model under 0.5 GiB keeps one model.safetensors.
# gptqmodel's own default is 4 GiB, transformers' 50 GB.
SHARD_BYTES = 1 << 29


# Every backend loads and saves through transformers (llm-compressor 0.14.0.1 pins <=5.17).
TRANSFORMERS = patching.Supported("transformers", "5.17")


@dataclass
class QuantizeRequest:
    """Everything a backend needs; built by the runner after validation."""
    model_dir: Path  # unquantized transformers checkpoint (a GGUF model is materialized first)
    # Save the quantized model here, loadable by AutoModelForCausalLM; the runner adds the
    # tokenizer, so adapters do not.
    out_dir: Path
    method: Any  # the composed method config (DictConfig): name, backend and method options
    bits: int
    group_size: int
    device: str  # "cpu" or "cuda"
    dtype: str  # dtype the model is loaded in for quantization
    # Token id rows, each a LongTensor of shape [seq_len]; None when the method needs no data.
    calibration: Optional[List[Any]] = None
    hardware: Any = None
    seed: int = 0
    # Where the backend may keep per-layer checkpoints so an interrupted quantization resumes
    # from the last finished layer (None: none). Deleted by the runner once the model is saved.
    checkpoint_dir: Optional[Path] = None
    # Called (no arguments) right after each per-layer checkpoint commit, before the next
    # layer starts: the runner seals the commit so a resume can trust it (run/stages.py).
    on_checkpoint: Optional[Callable[[], None]] = None


@dataclass
class QuantizeResult:
    format: str  # checkpoint format written: gptq, awq, bitsandbytes, compressed-tensors
    details: Dict[str, Any] = field(default_factory=dict)  # effective settings, kernel, versions


def require_cuda(device: str) -> None:
    """hardware.device=cuda needs a visible CUDA device (imports torch: only for cuda)."""
    if device != "cuda":
        return
    # the job's first torch import on a GPU (3.4-4.5 s on an H100 host): an import, not
    # qrecipe's own work (metrics.json `overhead`)
    with timed_import("torch"):
        import torch  # noqa: F401  deferred: torch (qrecipe.cuda asks a torch already imported)
    if cuda.loaded() is None:
        raise QRecipeError("no CUDA device is visible", key="hardware.device", value=device,
                           hint="use hardware=cpu on this machine")


class Backend:
    name: ClassVar[str]
    # (import name, pip requirement) of every package run() needs.
    requires: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    support: ClassVar[Dict[str, MethodSupport]] = {}  # CAPABILITIES[name]
    # The library versions qrecipe supports, and the patch sets the adapter may apply.
    versions: ClassVar[Tuple[patching.Supported, ...]] = (TRANSFORMERS,)
    patch_sets: ClassVar[Tuple[patching.PatchSet, ...]] = ()

    def support_for(self, method: str) -> MethodSupport:
        if method in self.support:
            return self.support[method]
        others = ", ".join(backends_for(method)) or "none"
        raise QRecipeError(f"backend {self.name} does not implement method {method}",
                           key="method.backend", value=self.name,
                           allowed=f"for method {method}: {others}")

    def missing_packages(self) -> List[str]:
        return [pip for mod, pip in self.requires if importlib.util.find_spec(mod) is None]

    def check_installed(self) -> None:
        missing = self.missing_packages()
        if missing:
            pins = " ".join(missing)
            raise QRecipeError(
                f"backend needs {', '.join(missing)}, which is not installed",
                key="method.backend", value=self.name,
                hint=f"install it with: pip install -c constraints.txt {pins}")

    def check_versions(self, method: str) -> None:
        """One line per library outside its supported series: a warning that says which patches
        the run goes without, or a refusal where the result depends on one (backends/patching)."""
        patching.check_versions(self.versions, self.patch_sets, method, self.name)

    def package_versions(self) -> Dict[str, str]:
        return {dist: installed_version(dist)
                for dist in (pip.split("==")[0].split("[")[0] for _, pip in self.requires)}

    def check_method(self, method: Any) -> None:
        """The method section's option values this backend takes (the schema has typed them);
        raise QRecipeError. Called by validate.py before any weight is loaded."""

    def check_model(self, method: Any, info: Any) -> None:
        """What the method cannot do on this model (info: inputs/shapes.ModelInfo); raise
        QRecipeError. Called by validate.py with the model's metadata, before any weight."""

    def reads_rows(self, method: Any) -> bool:
        """Whether quantizing with these method options reads calibration rows: the capability
        table's answer, refined by backends whose schemes decide it (FP8 dynamic reads none)."""
        return self.support_for(method.name).needs_calibration

    def preflight(self, method: str, bits: int, group_size: int, device: str) -> None:
        """Backend-specific limits the capability table cannot express; raise QRecipeError.
        Called by validate.py before any weight is loaded."""

    def library_import(self) -> None:
        """Import the library run() calls, with the environment it reads at import (nothing
        here: a backend whose import is quick). Call it through imported()."""

    def imported(self) -> float:
        """The library imported (a no-op once it is); the seconds its import took in this job,
        in this call and any earlier one: the runner imports it while the calibration text is
        tokenized on another thread (inputs/texts.token_ids), run() reports it as the library's
        own `import` seconds."""
        t0 = time.perf_counter()
        self.library_import()
        self._import_s = getattr(self, "_import_s", 0.0) + time.perf_counter() - t0
        return self._import_s

    def quantize(self, req: QuantizeRequest) -> QuantizeResult:
        """Quantize and save. validate.validate() has checked the method, the packages, their
        versions, the device and preflight(); what is left is the request's own data."""
        if self.reads_rows(req.method) and not req.calibration:
            raise QRecipeError(f"{req.method.name} needs calibration data",
                               key="calibration.num_samples", value=0)
        return self.run(req)

    def run(self, req: QuantizeRequest) -> QuantizeResult:  # pragma: no cover - abstract
        """translate the request -> run the library -> save -> describe."""
        raise NotImplementedError


from qrecipe.registry import Registry  # noqa: E402  (after Backend: adapters register subclasses)

#: name -> Backend subclass. Adapters register themselves with @BACKENDS.register("name").
BACKENDS: Registry[type] = Registry("backend", "method.backend")
