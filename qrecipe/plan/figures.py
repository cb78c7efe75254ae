"""What `qrecipe plan` knows besides the model: the devices users plan for, and the measured
quantization times it scales to other models.

Profiles are keyed by the names of the hardware configs (conf/hardware/NAME.yaml) so
`hardware=NAME` means the same device in a plan and in a run. Memory is the total the driver
reports (nvidia-smi); a GPU keeps ~1 GB of it for the CUDA context and kernels, which a plan
sets aside before it says "fits". `cpu` is this machine's RAM; `cpu_64gb` any amount.

Times come from benchmark result files (benchmarks/results/*.json, all in one shape:
{"device", "shape": {"hidden", "intermediate", "layers", ...}, "calibration": {"num_samples",
"seq_len"}, "rows": [{"method", "backend", "per_layer_s", ...}]}): the CPU runs of
docs/benchmarks.md, and the GPU benchmark's gpu_bench_h100.json when it exists. A figure is
scaled to the planned model by the linear parameters of one layer and, for calibrated methods,
by the calibration tokens; every estimate names the file and device it came from.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from qrecipe.errors import QRecipeError

GiB, GB = 1024 ** 3, 10 ** 9
_PKG = Path(__file__).resolve().parents[1]  # qrecipe/
# The wheel carries benchmarks/results inside the package; a checkout has it at the repo root.
RESULTS = next((p for p in (_PKG / "benchmarks" / "results",
                            _PKG.parent / "benchmarks" / "results") if p.is_dir()),
               _PKG.parent / "benchmarks" / "results")
GPU_RESERVE = 1 * GB  # CUDA context, cuBLAS workspace, allocator slack
CPU_RESERVE = 1 * GB  # the OS and everything else running


@dataclass(frozen=True)
class Profile:
    name: str
    label: str
    device: str  # cuda or cpu
    memory_bytes: int
    tflops: float = 0.0  # dense fp16 tensor TFLOPS (spec sheet): scales GPU times between GPUs

    @property
    def usable_bytes(self) -> int:
        return self.memory_bytes - (GPU_RESERVE if self.device == "cuda" else CPU_RESERVE)


PROFILES: Dict[str, Profile] = {p.name: p for p in (
    Profile("t4_16gb", "NVIDIA T4 16 GB", "cuda", 15360 * 2 ** 20, 65),
    Profile("rtx4090_24gb", "RTX 4090 24 GB", "cuda", 24564 * 2 ** 20, 165),
    Profile("gpu_24gb", "one 24 GB GPU", "cuda", 24564 * 2 ** 20, 165),
    Profile("a100_40gb", "A100 40 GB", "cuda", 40960 * 2 ** 20, 312),
    Profile("a100_80gb", "A100 80 GB", "cuda", 81920 * 2 ** 20, 312),
    Profile("h100_80gb", "H100 80 GB", "cuda", 81559 * 2 ** 20, 989),
    Profile("gpu_80gb", "one 80 GB GPU", "cuda", 81559 * 2 ** 20, 989),
)}


def profile(name: str) -> Profile:
    if name in PROFILES:
        return PROFILES[name]
    if name == "cpu":
        import psutil
        return Profile("cpu", "this machine's CPU and RAM", "cpu", psutil.virtual_memory().total)
    m = re.fullmatch(r"cpu_(\d+)gb", name)
    if m:
        return Profile(name, f"CPU with {m.group(1)} GB RAM", "cpu", int(m.group(1)) * GB)
    raise QRecipeError("unknown hardware profile", key="hardware", value=name,
                       allowed=", ".join([*PROFILES, "cpu", "cpu_<N>gb"]))


def load_results(folder: Path = RESULTS) -> List[dict]:
    """Every benchmark result file that has the expected shape; others are skipped."""
    found = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            d = json.loads(f.read_text())
            d["shape"]["hidden"], d["calibration"]["num_samples"], d["rows"][0]["method"]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue
        d["file"] = f"benchmarks/results/{f.name}"
        found.append(d)
    return found


def _layer_params(shape: dict) -> int:
    h, i = shape["hidden"], shape["intermediate"]
    heads, kv = shape.get("heads") or 1, shape.get("kv_heads") or shape.get("heads") or 1
    qd = h * kv // heads  # k/v width relative to the hidden size
    return h * (2 * h + 2 * qd) + 3 * h * i


def estimate_time(results: List[dict], method: str, backend: str, device: str,
                  layer_params: int, layers: int, num_samples: int, seq_len: int,
                  tflops: float = 0.0, bits: Optional[int] = None) -> Optional[dict]:
    """Seconds to quantize, scaled from the closest measurement on the same kind of device."""
    cands = [(d, r) for d in results for r in d["rows"]
             if r.get("method") == method and r.get("backend") == backend
             and (bits is None or r.get("bits") in (None, bits))
             and r.get("per_layer_s") and _kind(d["device"]) == device]
    if not cands:
        return None
    d, r = max(cands, key=lambda dr: _layer_params(dr[0]["shape"]))  # the largest shape measured
    ratio = layer_params / _layer_params(d["shape"])
    c = r.get("calibration") or d["calibration"]
    if method in ("gptq", "awq"):
        ratio *= (num_samples * seq_len) / (c["num_samples"] * c["seq_len"])
    measured_tflops = d.get("tflops") or _tflops_of(d["device"])
    speed = tflops / measured_tflops if (device == "cuda" and tflops and measured_tflops) else 1
    secs = r["per_layer_s"] * ratio / speed * layers
    what = f"{r['bits']}-bit, " if r.get("bits") else ""
    note = f"{what}{r['per_layer_s']:.3g} s/layer measured on {d['device']} ({d['file']})"
    if speed != 1:
        note += f", scaled by fp16 TFLOPS {tflops:g}/{measured_tflops:g}"
    return {"seconds": round(secs, 1), "source": note}


def _kind(device: str) -> str:
    return "cpu" if "cpu" in device.lower() else "cuda"


def _tflops_of(device: str) -> float:
    dev = device.lower()
    for key, t in (("h100", 989), ("h200", 989), ("a100", 312), ("4090", 165), ("t4", 65)):
        if key in dev:
            return t
    return 0.0
