"""What every backend adapter provides: a capability table and one `quantize` call.

The capability table is plain data so ``validate.py`` can check a recipe (bits, group size,
device, installed packages) before any weight is loaded. Adapters import their heavy libraries
inside `quantize`, never at module level: composing a config must not import torch.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from qrecipe.errors import QRecipeError

# The largest weights file (its tensors' bytes; a tensor over it gets a file of its own) the
# gptqmodel and bitsandbytes adapters write (llm-compressor keeps its own 20 GB: its adapter
# says why). Each file's sha256 is computed on its own thread (behind gptqmodel's writer, or
# side by side after a save_pretrained). One sha256 stream ran at ~1 GB/s on the H200 host
# (3.9 GB read back and hashed in 3.6 s), slower than gptqmodel's write (its whole save of the
# same 3.9 GB took 1.96 s): saved as one file, a 32-layer 7B GPTQ model left 2.2 s of hashing
# after the write, most of qrecipe's own 2.8 s (6.4% of the job; docs/benchmarks.md, "Eighth
# device session"). Hub checkpoints are commonly sharded at 2-5 GB; smaller models keep one
# model.safetensors. gptqmodel's own default is 4 GiB, transformers' 50 GB.
SHARD_BYTES = 2 << 30


@dataclass(frozen=True)
class MethodSupport:
    bits: Tuple[int, ...]
    # Group sizes accepted; -1 means per output channel. None: the library fixes it (bnb).
    group_sizes: Optional[Tuple[int, ...]] = (-1, 32, 64, 128, 256)
    needs_calibration: bool = True
    devices: Tuple[str, ...] = ("cpu", "cuda")
    note: str = ""


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


@dataclass
class QuantizeResult:
    format: str  # checkpoint format written: gptq, awq, bitsandbytes, compressed-tensors
    details: Dict[str, Any] = field(default_factory=dict)  # effective settings, kernel, versions


class Backend:
    name: ClassVar[str]
    # (import name, pip requirement) of every package quantize() needs.
    requires: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    support: ClassVar[Dict[str, MethodSupport]] = {}

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

    def package_versions(self) -> Dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version
        out = {}
        for _, pip in self.requires:
            dist = pip.split("==")[0].split("[")[0]
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                out[dist] = "missing"
        return out

    def preflight(self, method: str, bits: int, group_size: int, device: str) -> None:
        """Backend-specific limits the capability table cannot express; raise QRecipeError.
        Called by validate.py before any weight is loaded."""

    def quantize(self, req: QuantizeRequest) -> QuantizeResult:  # pragma: no cover - abstract
        raise NotImplementedError


from qrecipe.registry import Registry  # noqa: E402  (after Backend: adapters register subclasses)

#: name -> Backend subclass. Adapters register themselves with @BACKENDS.register("name").
BACKENDS: Registry[type] = Registry("backend", "method.backend")
