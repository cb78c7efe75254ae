"""The plan next to what a run measured: a section of the run's report.md, and the figures the
tests and docs compare (predicted against measured footprint, disk size and peak memory)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from qrecipe.boundary.yamlfile import read_yaml
from qrecipe.inputs.shapes import ModelShape, from_source
from qrecipe.plan import estimate as est
from qrecipe.plan.advice import recipe_format
from qrecipe.plan.build import build
from qrecipe.plan.hardware import gpu_profiles
from qrecipe.plan.render import table

_MB = 2 ** 20


def _lock(out: Path) -> dict:
    """A run directory's lock as plain data, read within the YAML limits (never resolved)."""
    return read_yaml(out / "recipe.lock.yaml", what="lock")[1]


def _hardware_choice(out: Path, device: str) -> str:
    if device == "cpu":
        return "cpu"
    try:
        name = read_yaml(out / ".hydra" / "hydra.yaml", what="Hydra record")[1][
            "hydra"]["runtime"]["choices"]["hardware"]
    except Exception:  # no Hydra record (a run driven by the API): an 80 GB GPU
        name = None
    return name if name in gpu_profiles() else "gpu_80gb"


def compare(out: Path, metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Plan for the run's model, format, hardware and calibration, beside its measurements."""
    cfg = _lock(out)
    m, hw, cal = cfg["model"], cfg["hardware"], cfg.get("calibration") or {}
    # the dtype the run used (qrecipe/run/dtypes.py); runs from before it was recorded: the config's
    dtype = (metrics.get("dtype") or {}).get("used") or hw.get("dtype") or m.get("dtype")
    shape = from_source(m["source"], m["path"], m.get("revision") or "main",
                        None if dtype == "auto" else dtype)
    group = metrics["group_size"] if metrics["group_size"] and metrics["group_size"] > 0 else 128
    plan = build(shape, _hardware_choice(out, hw["device"]), cfg["eval"]["seq_len"],
                 cfg["eval"].get("batch_size") or 1, group, cal.get("num_samples") or 128,
                 cal.get("seq_len") or 512)
    fmt = recipe_format(metrics["method"], metrics["bits"])
    row = plan["rows"][fmt]
    if metrics.get("format") == "hqq" and "hqq_weights_bytes" in row:  # hqq's layout (build)
        row = {**row, "weights_bytes": row["hqq_weights_bytes"],
               "disk_bytes": row["hqq_disk_bytes"]}
    quant = next((q for q in row["quantize"] if q["method"] == metrics["method"]
                  and q["backend"] == metrics["backend"]), None)
    size = metrics.get("size") or {}
    fp = "fp32" if shape.dtype == "float32" else "fp16"
    peak_key = "peak_rss_bytes" if hw["device"] == "cpu" else "peak_gpu_bytes"
    return {"plan": plan, "format": fmt, "fp_format": fp, "pairs": [
        (f"{fp} footprint", plan["rows"][fp]["weights_bytes"], size.get("fp_footprint_bytes")),
        (f"{fmt} footprint", row["weights_bytes"], size.get("footprint_bytes")),
        (f"{fmt} on disk", row["disk_bytes"], size.get("model_dir_bytes")),
        (f"peak {'RSS' if hw['device'] == 'cpu' else 'GPU'} while quantizing "
         f"({metrics['method']}/{metrics['backend']})",
         quant and quant["peak_bytes"], (metrics.get(peak_key) or {}).get("quantize"))]}


def _ratio(pred: Optional[int], meas: Optional[int]) -> str:
    return f"{pred / meas:.2f}" if pred and meas else "-"


def run_section(out: Path, metrics: Dict[str, Any]) -> List[str]:
    if not (out / "recipe.lock.yaml").is_file():
        return []  # not a run directory the runner wrote
    c = compare(out, metrics)
    lines = ["## Plan against measurement", "",
             f"`qrecipe plan` for this model on `{c['plan']['hardware']['name']}` (context "
             f"{c['plan']['settings']['context']}, this run's calibration), beside what the run "
             "measured (MB = 2^20 bytes):", "",
             "| figure | predicted MB | measured MB | predicted / measured |", "|---|---|---|---|"]
    for name, pred, meas in c["pairs"]:
        lines.append(f"| {name} | {_mb(pred)} | {_mb(meas)} | {_ratio(pred, meas)} |")
    if c["format"] != "nf4" and metrics.get("format") == "compressed-tensors":
        lines += ["", "compressed-tensors checkpoints are decompressed to dense weights when "
                      "transformers loads them on CPU: the measured footprint is the dense one."]
    lines += ["", "The plan for every format (decimal GB):", ""] + table(c["plan"], True) + [""]
    return lines


def _mb(v: Optional[int]) -> str:
    return "-" if v is None else f"{v / _MB:.1f}"


def gpu_comparison(result: Dict[str, Any], fmt: str = "w4") -> List[Dict[str, Any]]:
    """Predicted against measured peak GPU memory for the rows of a GPU benchmark result
    (the JSON benchmarks/gpu_bench.py writes: "shape", "calibration", rows with "method",
    "backend", "peak_gpu_bytes"): the check of issue 10's acceptance 3."""
    sh, cal = result["shape"], result["calibration"]
    shape = ModelShape(name="benchmark", source="local", model_type="llama",
                       hidden=sh["hidden"], intermediate=sh["intermediate"],
                       layers=sh["layers"], heads=sh["heads"],
                       kv_heads=sh.get("kv_heads") or sh["heads"],
                       head_dim=sh["hidden"] // sh["heads"], vocab=sh["vocab"], tied=False,
                       dtype="float16")
    out = []
    for r in result["rows"]:
        if not r.get("peak_gpu_bytes") or (r["method"], r["backend"]) not in est.METHODS[fmt]:
            continue
        c = r.get("calibration") or cal
        pred = est.quantize_peak_bytes(shape, fmt, r["method"], r["backend"], "cuda",
                                       c["num_samples"], c["seq_len"])
        out.append({"method": r["method"], "backend": r["backend"], "predicted_bytes": pred,
                    "measured_bytes": r["peak_gpu_bytes"],
                    "ratio": round(pred / r["peak_gpu_bytes"], 3)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qrecipe.plan.compare",
                                 description="Predicted (qrecipe plan) against measured peak GPU "
                                             "memory while quantizing, per row of a GPU benchmark "
                                             "JSON (benchmarks/gpu_bench.py).")
    ap.add_argument("json", type=Path, help="a result file of benchmarks/gpu_bench.py")
    a = ap.parse_args(argv)
    for row in gpu_comparison(json.loads(a.json.read_text())):
        print(f"{row['method']}/{row['backend']}: predicted {row['predicted_bytes'] / _MB:.0f} "
              f"MB, measured {row['measured_bytes'] / _MB:.0f} MB, ratio {row['ratio']}")
    return 0


if __name__ == "__main__":  # python -m qrecipe.plan.compare RESULT.json
    raise SystemExit(main())
