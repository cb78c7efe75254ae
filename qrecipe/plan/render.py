"""A plan (qrecipe/plan/build.py) as text: the terminal report of `qrecipe plan`, and the format
table a run's report.md shows in markdown."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from qrecipe.inputs.shapes import DTYPE_BYTES

GB = 1e9


def gb(b: Optional[float]) -> str:
    return "-" if b is None else f"{b / GB:.2f}"


def duration(sec: Optional[float]) -> str:
    if sec is None:
        return "?"
    return f"{sec:.0f} s" if sec < 120 else f"{sec / 60:.0f} min" if sec < 7200 \
        else f"{sec / 3600:.1f} h"


def quantize_time(q: Dict[str, Any]) -> str:
    """A quantize time: the figure, or its range where it comes from another machine."""
    span = q.get("seconds_range")
    return f"{duration(span[0])}-{duration(span[1])}" if span else duration(q["seconds"])


def aligned(rows: List[List[str]], right: bool = False) -> List[str]:
    """Columns padded to their widest cell; `right`: numbers right-aligned after the first."""
    w = [max(len(x[i]) for x in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w[i]) if right and i else c.ljust(w[i])
                      for i, c in enumerate(x)).rstrip() for x in rows]


def table(plan: Dict[str, Any], markdown: bool = False) -> List[str]:
    """The format table, as aligned text or as markdown."""
    s, rows = plan["settings"], plan["rows"]
    head = ["format", "weights GB", f"inference GB (ctx {s['context']}, batch {s['batch']})",
            "disk GB", "fits", "margin GB", "quantize peak GB", "quantize time"]
    body = []
    for fmt, r in rows.items():
        peaks = ", ".join(f"{b} {gb(v)}" for b, v in r["quantize_peak_bytes"].items()) or "-"
        times = ", ".join(f"{q['method']}/{q['backend']} {quantize_time(q)}"
                          for q in r["quantize"] if q["seconds"] is not None) or "-"
        body.append([fmt, gb(r["weights_bytes"]), gb(r["inference_bytes"]),
                     gb(r["disk_bytes"]), "yes" if r["fits"] else "NO",
                     f"{r['margin_bytes'] / GB:+.2f}", peaks, times])
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
            "| " + " | ".join(b) + " |" for b in body]
    return aligned([head] + body)


def profiles_table(plan: Dict[str, Any]) -> List[str]:
    """Inference margin of every format on every one-GPU profile; profiles of the same memory
    share a column (gpu_80gb/h100_80gb)."""
    by = next(iter(plan["rows"].values()))["margin_bytes_by_profile"]
    same: Dict[int, List[str]] = {}
    for n, margin in by.items():
        same.setdefault(margin, []).append(n)
    cols = [names[0] for names in same.values()]
    body = [[fmt, *(f"{r['margin_bytes_by_profile'][n] / GB:+.1f}" for n in cols)]
            for fmt, r in plan["rows"].items()]
    return aligned([["format", *("/".join(v) for v in same.values())]] + body, right=True)


def _header(plan: Dict[str, Any]) -> List[str]:
    m, h, s = plan["model"], plan["hardware"], plan["settings"]
    out = [f"model {m['name']} ({m['model_type']}, {m['params'] / 1e9:.2f} B parameters, "
           f"{m['layers']} layers, hidden {m['hidden']}, kv heads {m['kv_heads']}, "
           f"{'tied' if m['tied'] else 'separate'} embeddings, unquantized tensors in "
           f"{m['dtype']})",
           f"hardware {h['name']}: {h['label']}, {h['memory_bytes'] / GB:.1f} GB, "
           f"{h['usable_bytes'] / GB:.1f} GB usable; integer formats at group size "
           f"{s['group_size']}; calibration {s['num_samples']} x {s['seq_len']} tokens", ""]
    out[-1:] = _embedding_note(m) + [""]
    g = s["group_size"]
    if g > 0 and (m["hidden"] % g or m["intermediate"] % g):
        ok = [x for x in (128, 64, 32) if not (m["hidden"] % x or m["intermediate"] % x)]
        out[-1:] = [f"note: group size {g} does not divide this model's widths ({m['hidden']}, "
                    f"{m['intermediate']}): the backends reject it; plan with --group-size "
                    f"{ok[0] if ok else -1}", ""]
    return out


# Shown where the embedding is this share of the parameters or more: there it, not the
# quantized layers, sets how small a quantized model gets (Gemma 3 270M: 63%; Llama-2 7B: 2%).
EMBEDDING_NOTE_SHARE = 0.2


def _embedding_note(m: Dict[str, Any]) -> List[str]:
    emb = m.get("embedding_params")
    if not emb or emb < EMBEDDING_NOTE_SHARE * m["params"]:
        return []
    what = (f"the tied {m['vocab']} x {m['hidden']} embedding (also the lm_head)" if m["tied"]
            else f"the {m['vocab']} x {m['hidden']} embedding and lm_head")
    return [f"note: {what} is {emb / 1e6:.0f} M of the {m['params'] / 1e6:.0f} M parameters "
            f"({emb / m['params']:.0%}), {m['embedding_kept']}: the weights below keep it in "
            f"{m['dtype']}, {emb * DTYPE_BYTES[m['dtype']] / GB:.2f} GB"
            + ("; --dtype bfloat16 halves that" if DTYPE_BYTES[m["dtype"]] == 4 else "")]


def _quantize_notes(plan: Dict[str, Any]) -> List[str]:
    out = ["quantize peak: GPU memory on a GPU profile (model offloaded to host RAM, one layer "
           "on the GPU), process RSS on a CPU."]
    h = plan["hardware"]
    if h["device"] == "cpu":
        rate = h.get("cpu_gemm_gflops")
        out.append("quantize time on this CPU: " + (
            f"its float32 GEMM runs at {rate:g} GFLOP/s (`qrecipe plan --probe`); times "
            "measured on a machine of known rate are scaled to it, the others are ranges "
            "(x0.25-x4 of the measured time)" if rate else
            "a range (x0.25-x4 of the time measured on another machine)"))
    out.append("Time sources:")
    out += sorted({f"  {q['method']}/{q['backend']}: {q['time_source']}"
                   for r in plan["rows"].values() for q in r["quantize"]}) + [""]
    host = {q["backend"]: q["host_bytes"] for r in plan["rows"].values()
            for q in r["quantize"] if q.get("host_bytes")}
    if host:
        out += ["host RAM while quantizing on the GPU (the offloaded model and the process; "
                "at most): " + ", ".join(f"{b} {gb(v)} GB" for b, v in sorted(host.items())), ""]
    return out


def _advice(plan: Dict[str, Any]) -> List[str]:
    if plan.get("measured") is not None:
        out = _measured_lines(plan["measured"])
    else:
        out = ["advice (rules of the decision framework, not measurements):"]
        out += [f"  {a['goal']}: {', '.join(a['formats'])} -> {a['why']}"
                + ("" if a["fits"] else "  [does not fit this hardware]")
                for a in plan["advice"]]
    out += ["", "shipped recipes on this model and hardware, best first (fits; local inputs "
                "for a model on disk; made for this model, then the Δppl it promises; memory "
                "margin):"]
    for r in plan["recipes"]:
        mark = "fits" if r["fits"] and not r["near_miss"] else \
            "fits with override" if r["fits"] else "does not fit"
        facts = [f"margin {r['margin_bytes'] / GB:+.1f} GB"]
        if r["expected_delta_ppl"] is not None:
            facts.insert(0, f"expected Δppl {r['expected_delta_ppl']:+g}")
        if r["seconds"] is not None:
            facts.append(f"quantize {quantize_time(r)}")
        if r["hub_inputs"]:
            facts.append(f"needs the hub: {', '.join(r['hub_inputs'])}")
        out.append(f"  {r['rank']}. {r['recipe']} ({r['format']} {r['method']}/{r['backend']}): "
                   f"{mark}; {'; '.join(facts)}" + (f" - {r['note']}" if r["note"] else ""))
        if r["fits"]:
            out.append(f"     {r['command']}")
    return out


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


def render(plan: Dict[str, Any]) -> str:
    """The terminal report of `qrecipe plan`."""
    out = _header(plan) + table(plan) + [""]
    out += ["inference margin GB on each GPU profile (negative: does not fit):"]
    out += profiles_table(plan) + [""]
    return "\n".join(out + _quantize_notes(plan) + _advice(plan))
