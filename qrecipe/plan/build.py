"""`qrecipe plan MODEL [hardware=PROFILE] [--context N] [--batch B] [--json] [--from DIR...]`:
will this model fit this device, in which format, how long quantizing takes, and which recipe to
start from. Reads metadata only (config.json or a GGUF header); never a weight, never torch.

`--json` is a stable interface: {"model", "hardware", "settings", "rows", "advice", "recipes"}
where rows is an object keyed by fp32, fp16, int8, nf4, w8, w4, w3, w2, each with weights_bytes,
inference_bytes, kv_cache_bytes, disk_bytes, quantize_peak_bytes {backend: bytes} (GPTQ for
gptqmodel/llm-compressor), quantize [{method, backend, peak_bytes, host_bytes, seconds,
time_source}], fits and margin_bytes (against the profile's usable memory), and
margin_bytes_by_profile (every GPU profile users have); with --from, "measured" (ranked runs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from qrecipe.inputs.shapes import ModelShape, read_shape
from qrecipe.plan import estimate as est
from qrecipe.plan.advice import rank_measured, recipes_advice, rules
from qrecipe.plan.figures import PROFILES, estimate_time, load_results, profile

GB = 1e9
BITS = {"fp32": 32, "fp16": 16, "int8": 8, "nf4": 4, "w8": 8, "w4": 4, "w3": 3, "w2": 2}
USER_GPUS = ("t4_16gb", "rtx4090_24gb", "a100_40gb", "a100_80gb", "h100_80gb")
MAIN_METHOD = {"gptqmodel": "gptq", "llmcompressor": "gptq", "bitsandbytes": "bnb"}


def build(shape: ModelShape, hw: str = "cpu", context: int = 2048, batch: int = 1,
          group: int = 128, num_samples: int = 128, seq_len: int = 512) -> Dict[str, Any]:
    p = profile(hw)
    results = load_results()
    rows = {}
    for fmt in est.FORMATS:
        inf = est.inference_bytes(shape, fmt, context, batch, group)
        quant = [_quantize(shape, fmt, m, b, p, results, num_samples, seq_len, group)
                 for m, b in est.METHODS[fmt]]
        rows[fmt] = {
            "bits": BITS[fmt], "group_size": group if fmt in est.INT_BITS else None,
            "weights_bytes": est.weights_bytes(shape, fmt, group),
            "inference_bytes": inf,
            "kv_cache_bytes": est.kv_cache_bytes(shape, fmt, context, batch),
            "disk_bytes": est.disk_bytes(shape, fmt, group),
            "quantize_peak_bytes": {q["backend"]: q["peak_bytes"] for q in quant
                                    if q["method"] == MAIN_METHOD[q["backend"]]},
            "quantize": quant,
            "fits": inf <= p.usable_bytes, "margin_bytes": p.usable_bytes - inf,
            "margin_bytes_by_profile": {n: PROFILES[n].usable_bytes - inf for n in USER_GPUS}}
    if "nf4" in rows:
        rows["nf4"]["weights_bytes_no_double_quant"] = est.weights_bytes(
            shape, "nf4", group, double_quant=False)
    return {"model": {**shape.to_dict(), "params": est.total_params(shape)},
            "hardware": {"name": p.name, "label": p.label, "device": p.device,
                         "memory_bytes": p.memory_bytes, "usable_bytes": p.usable_bytes},
            "settings": {"context": context, "batch": batch, "group_size": group,
                         "num_samples": num_samples, "seq_len": seq_len},
            "rows": rows}


def _quantize(shape, fmt, method, backend, p, results, n, L, group) -> Dict[str, Any]:
    peak = est.quantize_peak_bytes(shape, fmt, method, backend, p.device, n, L, group)
    copies = est.CALIB_COPIES[p.device].get((method, backend), 0)
    work = 2 if p.device == "cuda" else est.DTYPE_BYTES[shape.dtype]
    t = estimate_time(results, method, backend, p.device, est.layer_linear_params(shape),
                      shape.layers, n, L, p.tflops, BITS[fmt] if method == "bnb" else None)
    host = est.host_bytes(shape, backend) if p.device == "cuda" else None
    return {"method": method, "backend": backend, "peak_bytes": peak, "host_bytes": host,
            "calib_bytes": n * L * shape.hidden * work * copies,
            "fits": peak <= p.usable_bytes,
            "seconds": t and t["seconds"],
            "time_source": t["source"] if t else _no_time(p.device)}


def _no_time(device: str) -> str:
    if device == "cuda":
        return "no GPU measurement (benchmarks/results/gpu_bench_h100.json absent)"
    return "no CPU measurement of this method/backend"


def model_args(shape: ModelShape) -> str:
    """The overrides that point a recipe at the planned model."""
    if shape.source != "local" and "/" not in shape.name and not shape.name.endswith(".gguf"):
        return f"model={shape.name}"  # a shipped model config
    return f"model=local model.source={shape.source} model.path={shape.name} " \
           f"model.dtype={shape.dtype}"


def hw_args(name: str) -> str:
    """The hardware override of a run on this profile: its config, or the nearest one capped
    at this GPU's usable memory."""
    from qrecipe.paths import config_dir
    if (config_dir() / "hardware" / f"{name}.yaml").is_file():
        return f"hardware={name}"
    if name.startswith("cpu"):
        return "hardware=cpu"
    p = profile(name)
    return f"hardware=gpu_24gb hardware.max_memory.0={int(p.usable_bytes / 2 ** 30)}GiB"


def _g(b: Optional[float]) -> str:
    return "-" if b is None else f"{b / GB:.2f}"


def table(plan: Dict[str, Any], markdown: bool = False) -> List[str]:
    """The format table, as aligned text or as markdown."""
    s, rows = plan["settings"], plan["rows"]
    head = ["format", "weights GB", f"inference GB (ctx {s['context']}, batch {s['batch']})",
            "disk GB", "fits", "margin GB", "quantize peak GB", "quantize time"]
    body = []
    for fmt, r in rows.items():
        peaks = ", ".join(f"{b} {_g(v)}" for b, v in r["quantize_peak_bytes"].items()) or "-"
        times = ", ".join(f"{q['method']}/{q['backend']} {_dur(q['seconds'])}"
                          for q in r["quantize"] if q["seconds"] is not None) or "-"
        body.append([fmt, _g(r["weights_bytes"]), _g(r["inference_bytes"]),
                     _g(r["disk_bytes"]), "yes" if r["fits"] else "NO",
                     f"{r['margin_bytes'] / GB:+.2f}", peaks, times])
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
            "| " + " | ".join(b) + " |" for b in body]
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    return ["  ".join(c.ljust(w[i]) for i, c in enumerate(x)).rstrip() for x in [head] + body]


def profiles_table(plan: Dict[str, Any]) -> List[str]:
    head = ["format", *USER_GPUS]
    body = [[fmt, *(f"{r['margin_bytes_by_profile'][n] / GB:+.1f}" for n in USER_GPUS)]
            for fmt, r in plan["rows"].items()]
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    return ["  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(x))
            for x in [head] + body]


def _dur(sec: Optional[float]) -> str:
    if sec is None:
        return "?"
    return f"{sec:.0f} s" if sec < 120 else f"{sec / 60:.0f} min" if sec < 7200 \
        else f"{sec / 3600:.1f} h"


def render(plan: Dict[str, Any]) -> str:
    m, h, s = plan["model"], plan["hardware"], plan["settings"]
    out = [f"model {m['name']} ({m['model_type']}, {m['params'] / 1e9:.2f} B parameters, "
           f"{m['layers']} layers, hidden {m['hidden']}, kv heads {m['kv_heads']}, "
           f"{'tied' if m['tied'] else 'separate'} embeddings, unquantized tensors in "
           f"{m['dtype']})",
           f"hardware {h['name']}: {h['label']}, {h['memory_bytes'] / GB:.1f} GB, "
           f"{h['usable_bytes'] / GB:.1f} GB usable; integer formats at group size "
           f"{s['group_size']}; calibration {s['num_samples']} x {s['seq_len']} tokens", ""]
    g = s["group_size"]
    if g > 0 and (m["hidden"] % g or m["intermediate"] % g):
        ok = [x for x in (128, 64, 32) if not (m["hidden"] % x or m["intermediate"] % x)]
        out[-1:] = [f"note: group size {g} does not divide this model's widths ({m['hidden']}, "
                    f"{m['intermediate']}): the backends reject it; plan with --group-size "
                    f"{ok[0] if ok else -1}", ""]
    out += table(plan) + [""]
    out += ["inference margin GB on each GPU profile (negative: does not fit):"]
    out += profiles_table(plan) + [""]
    out += ["quantize peak: GPU memory on a GPU profile (model offloaded to host RAM, one layer "
            "on the GPU), process RSS on a CPU. Time sources:"]
    seen = sorted({f"  {q['method']}/{q['backend']}: {q['time_source']}"
                   for r in plan["rows"].values() for q in r["quantize"]})
    out += seen + [""]
    host = {q["backend"]: q["host_bytes"] for r in plan["rows"].values()
            for q in r["quantize"] if q.get("host_bytes")}
    if host:
        out += ["host RAM while quantizing on the GPU (the offloaded model and the process; "
                "at most): " + ", ".join(f"{b} {_g(v)} GB" for b, v in sorted(host.items())), ""]
    if plan.get("measured") is not None:
        out += _measured_lines(plan["measured"])
    else:
        out += ["advice (rules of the decision framework, not measurements):"]
        out += [f"  {a['goal']}: {', '.join(a['formats'])} -> {a['why']}"
                + ("" if a["fits"] else "  [does not fit this hardware]")
                for a in plan["advice"]]
    out += ["", "shipped recipes on this model and hardware:"]
    for r in plan["recipes"]:
        mark = "fits" if r["fits"] and not r["near_miss"] else \
            "fits with override" if r["fits"] else "does not fit"
        out.append(f"  {r['recipe']} ({r['format']} {r['method']}/{r['backend']}): {mark}"
                   + (f" - {r['note']}" if r["note"] else ""))
        if r["fits"]:
            out.append(f"    {r['command']}")
    return "\n".join(out)


def _measured_lines(measured: List[dict]) -> List[str]:
    if not measured:
        return ["--from: no complete runs with a quality figure under the given directories"]
    out = [f"ranked from {len(measured)} measured runs (--from), best Δppl first among those "
           "whose measured footprint fits; not from rules:"]
    for i, r in enumerate(measured, 1):
        out.append(f"  {i}. {r['run']}: {r['method']}/{r['backend']} w{r['bits']} "
                   f"g{r['group_size']}: Δppl {r['delta_ppl']:+.3f}, footprint "
                   f"{r['footprint_mb']} MB{'' if r['fits'] else ' [does not fit]'}")
    return out


def full_plan(model: str, hw: str, context: int, batch: int, group: int, num_samples: int,
              seq_len: int, dtype: Optional[str], revision: str,
              from_dirs: Optional[List[Path]] = None) -> Dict[str, Any]:
    shape = read_shape(model, revision, dtype)
    plan = build(shape, hw, context, batch, group, num_samples, seq_len)
    plan["advice"] = rules(plan["rows"])
    plan["recipes"] = recipes_advice(plan, model_args(shape), hw_args(hw))
    if from_dirs:
        plan["measured"] = rank_measured(from_dirs, plan["hardware"]["usable_bytes"])
    return plan


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="qrecipe plan",
        description="Will MODEL fit this hardware, in which format, how long does quantizing "
                    "take, and which recipe to start from. Reads config.json or a GGUF header "
                    "only: no weights are downloaded or read.",
        epilog="MODEL: a hub id (org/name; only config.json is fetched), a local folder with "
               "config.json, a .gguf file (or pkg://PACKAGE/FILE.gguf), or a shipped model "
               "config name (" + ", ".join(sorted(p.stem for p in _model_confs()
                                               if p.stem != "local")) + "). "
               "PROFILE: " + ", ".join([*PROFILES, "cpu (this machine)", "cpu_<N>gb"]) + ". "
               "Sizes are decimal GB (1e9 bytes).")
    ap.add_argument("model", metavar="MODEL",
                    help="hub id, local folder, .gguf file or shipped model config (below)")
    ap.add_argument("hardware", nargs="?", default="hardware=cpu", metavar="hardware=PROFILE",
                    help="device to plan for (default: cpu, this machine's RAM)")
    ap.add_argument("--context", type=int, default=2048, help="tokens of context (default 2048)")
    ap.add_argument("--batch", type=int, default=1, help="sequences at once (default 1)")
    ap.add_argument("--group-size", type=int, default=128,
                    help="group size of the integer formats (default 128; -1 per channel)")
    ap.add_argument("--samples", type=int, default=128, help="calibration rows (default 128)")
    ap.add_argument("--seq-len", type=int, default=512,
                    help="calibration tokens per row (default 512)")
    ap.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                    help="dtype of unquantized tensors (default: the model's)")
    ap.add_argument("--revision", default="main", help="hub revision (default main)")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    ap.add_argument("--from", dest="from_dirs", nargs="+", type=Path, metavar="DIR",
                    help="run or sweep output dirs: rank their measured runs instead of rules")
    a = ap.parse_args(argv)
    hw = _hardware_name(a.hardware)
    for k in ("context", "batch", "samples", "seq_len"):
        if getattr(a, k) < 1:
            from qrecipe.errors import QRecipeError
            raise QRecipeError("must be at least 1", key=f"--{k.replace('_', '-')}",
                               value=getattr(a, k))
    plan = full_plan(a.model, hw, a.context, a.batch, a.group_size, a.samples, a.seq_len,
                     a.dtype, a.revision, a.from_dirs)
    try:
        print(json.dumps(plan, indent=2) if a.json else render(plan))
    except BrokenPipeError:  # `qrecipe plan ... | head`
        sys.stderr.close()
    return 0


def _hardware_name(arg: str) -> str:
    from qrecipe.errors import QRecipeError
    if not arg.startswith("hardware="):
        raise QRecipeError("expected hardware=PROFILE", key="hardware", value=arg,
                           allowed=", ".join([*PROFILES, "cpu", "cpu_<N>gb"]))
    return arg.split("=", 1)[1]


def _model_confs():
    from qrecipe.paths import config_dir
    return (config_dir() / "model").glob("*.yaml")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
