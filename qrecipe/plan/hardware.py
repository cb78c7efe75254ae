"""The devices `qrecipe plan` plans for. Every one-GPU hardware config is one: the planner reads
conf/hardware/NAME.yaml (label, memory_mib, fp16_tflops: qrecipe/recipes/schema.py
HardwareConfig), so `hardware=NAME` means the same device in a plan and in a run. Besides them,
`cpu` (this machine's RAM) and `cpu_<N>gb` (any amount).

Memory is the total the driver reports (nvidia-smi); a GPU keeps ~1 GB of it for the CUDA context
and kernels, which a plan sets aside before it says "fits".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from qrecipe.errors import QRecipeError
from qrecipe.paths import config_dir

GB = 10 ** 9
GPU_RESERVE = 1 * GB  # CUDA context, cuBLAS workspace, allocator slack
CPU_RESERVE = 1 * GB  # the OS and everything else running
# The hardware settings a measured quantize time depends on (measurements.json `hardware`): on an
# H100, GPTQ took 1.02 s a layer with the 80 GB profiles' fast_layer_loop, tensor_core_hessian and
# batch of 32 rows, and 2.47 s in the general measurement; AWQ's seconds differ by dtype.
TIME_SETTINGS = ("dtype", "calib_batch_size", "stream_activations", "model_on_gpu",
                 "fast_layer_loop", "tensor_core_hessian")


@dataclass(frozen=True)
class Profile:
    name: str
    label: str
    device: str  # cuda or cpu
    memory_bytes: int
    tflops: float = 0.0  # dense fp16 tensor TFLOP/s (spec sheet): scales GPU times between GPUs
    settings: Tuple[Tuple[str, Any], ...] = ()  # its TIME_SETTINGS that the config sets

    @property
    def usable_bytes(self) -> int:
        return self.memory_bytes - (GPU_RESERVE if self.device == "cuda" else CPU_RESERVE)


@lru_cache(maxsize=1)
def gpu_profiles() -> Dict[str, Profile]:
    """Every one-GPU hardware config (one with memory_mib), smallest memory first."""
    found = []
    for f in sorted((config_dir() / "hardware").glob("*.yaml")):
        hw = OmegaConf.load(f)
        if hw.get("device") == "cuda" and hw.get("memory_mib"):
            found.append(_one_gpu(f.stem, hw))
    return {p.name: p for p in sorted(found, key=lambda p: (p.memory_bytes, p.name))}


def _one_gpu(name: str, hw) -> Profile:
    return Profile(name, str(hw.get("label") or name), "cuda", int(hw.memory_mib) * 2 ** 20,
                   float(hw.get("fp16_tflops") or 0),
                   tuple((k, hw.get(k)) for k in TIME_SETTINGS if hw.get(k) is not None))


def of_config(hw, mem_gb: Optional[float] = None) -> Profile:
    """The profile a composed `hardware` section plans as: a GPU config by its own figures; a
    CPU job on this machine, or (mem_gb: what a cluster launcher books per job) on that much
    RAM."""
    if hw.get("device") == "cuda":
        if not hw.get("memory_mib"):
            raise QRecipeError("a GPU config without memory_mib cannot be planned (several "
                               "GPUs or an unknown one): plan with a one-GPU profile",
                               key="hardware", value=hw.get("label") or "?",
                               allowed=", ".join(gpu_profiles()))
        return _one_gpu(str(hw.get("label") or "gpu"), hw)
    return profile(f"cpu_{int(mem_gb)}gb") if mem_gb else profile("cpu")


def names() -> List[str]:
    """What `hardware=` takes in a plan."""
    return [*gpu_profiles(), "cpu", "cpu_<N>gb"]


def profile(name: str) -> Profile:
    gpus = gpu_profiles()
    if name in gpus:
        return gpus[name]
    if name == "cpu":
        import psutil
        return Profile("cpu", "this machine's CPU and RAM", "cpu", psutil.virtual_memory().total)
    m = re.fullmatch(r"cpu_(\d+)gb", name)
    if m:
        return Profile(name, f"CPU with {m.group(1)} GB RAM", "cpu", int(m.group(1)) * GB)
    if (config_dir() / "hardware" / f"{name}.yaml").is_file():
        raise QRecipeError("not one GPU of a known memory size (no memory_mib in its config): "
                           "plan with a one-GPU profile", key="hardware", value=name,
                           allowed=", ".join(names()))
    raise QRecipeError("unknown hardware profile", key="hardware", value=name,
                       allowed=", ".join(names()))
