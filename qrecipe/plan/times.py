"""How long quantizing takes, scaled from a measurement: qrecipe/plan/measurements.json holds the
measured per-layer times (one per method, backend, bit width where it matters, and kind of
device; each with the benchmark, command, date and machine that produced it). A time is scaled
to the planned model by the linear parameters of one layer, for calibrated methods by the
calibration tokens, between GPUs by their fp16 tensor TFLOP/s, and between CPUs by their float32
GEMM rate (qrecipe/plan/probe.py: this machine's, against the measuring machine's probe_gflops).
A measurement that names `hardware` settings (the profile's knobs it ran with) is used only for a
profile with the same settings, ahead of the one that names none.
A CPU time from a machine whose rate is unknown, or planned for another machine (cpu_<N>gb), is
a range (OTHER_MACHINE). Every estimate names the measurement it came from.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from qrecipe.backends.capabilities import time_grows_with_rows

MEASUREMENTS = Path(__file__).with_name("measurements.json")
# How far a CPU time may move on a machine whose GEMM rate is not known, as factors: CPUs
# differ about 4x either way (the demo's GPTQ took 2 min on CPU-A and 8 min on CPU-B, both
# 2-core cloud machines; a workstation is several times faster than either).
OTHER_MACHINE = (0.25, 4.0)


def load_measurements(path: Path = MEASUREMENTS) -> List[dict]:
    return json.loads(Path(path).read_text())["measurements"]


def _layer_params(shape: dict) -> int:
    h, i = shape["hidden"], shape["intermediate"]
    heads, kv = shape.get("heads") or 1, shape.get("kv_heads") or shape.get("heads") or 1
    qd = h * kv // heads  # k/v width relative to the hidden size
    return h * (2 * h + 2 * qd) + 3 * h * i


def _applies(m: dict, settings: Dict[str, Any]) -> bool:
    return all(settings.get(k) == v for k, v in (m.get("hardware") or {}).items())


def estimate_time(measurements: List[dict], method: str, backend: str, device: str,
                  layer_params: int, layers: int, num_samples: int, seq_len: int,
                  tflops: float = 0.0, bits: Optional[int] = None,
                  gflops: Optional[float] = None,
                  settings: Optional[Dict[str, Any]] = None) -> Optional[dict]:
    """Seconds to quantize, scaled from the measurement on the same kind of device (the one
    made with most of the profile's settings, then the largest shape measured): {"seconds",
    "range" ([low, high] or None: a point estimate), "source"}. gflops: the planned CPU's GEMM
    rate (None: not this machine, or not probed); settings: the profile's TIME_SETTINGS."""
    cands = [m for m in measurements
             if m["method"] == method and m["backend"] == backend
             and m["device_class"] == device and (bits is None or m.get("bits") in (None, bits))
             and _applies(m, settings or {})]
    if not cands:
        return None
    m = max(cands, key=lambda m: (len(m.get("hardware") or {}), _layer_params(m["shape"])))
    ratio = layer_params / _layer_params(m["shape"])
    c = m["calibration"]
    # the capability table says which methods' time grows with the rows; a measurement of a
    # setting that reads none (e.g. NVFP4 weight-only) says so itself
    if m.get("grows_with_rows", time_grows_with_rows(method, backend)):
        ratio *= (num_samples * seq_len) / (c["num_samples"] * c["seq_len"])
    measured = m.get("fp16_tflops") or 0
    speed = tflops / measured if (device == "cuda" and tflops and measured) else 1
    secs = m["per_layer_s"] * ratio / speed * layers
    what = f"{m['bits']}-bit, " if m.get("bits") else ""
    note = (f"{what}{m['per_layer_s']:.3g} s/layer measured on {m['device']} "
            f"(measurements.json: {m['id']}{'; ' + m['setting'] if m.get('setting') else ''})")
    if speed != 1:
        note += f", scaled by fp16 TFLOPS {tflops:g}/{measured:g}"
    span = None
    if device == "cpu":
        there = m.get("probe_gflops")
        if there and gflops:
            secs *= there / gflops
            note += f", scaled to this CPU by float32 GEMM GFLOP/s {gflops:g}/{there:g}"
        else:
            span = [round(secs * OTHER_MACHINE[0], 1), round(secs * OTHER_MACHINE[1], 1)]
            note += (", from another machine" + ("" if there else " (its GEMM rate unknown)")
                     + f": x{OTHER_MACHINE[0]:g}-x{OTHER_MACHINE[1]:g} here")
    return {"seconds": round(secs, 1), "range": span, "source": note}
