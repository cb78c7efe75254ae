"""report.md for one run, written from its metrics and fingerprints."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from qrecipe.boundary.rundir import write_text_nofollow
from qrecipe.evaluation.tasks import report_lines as task_lines
from qrecipe.kernels import hf_config as kernel_config
from qrecipe.kernels.measured import REFERENCE_DTYPE
from qrecipe.kernels import table as kernels
from qrecipe.recipes.meta import report_lines as expectation_lines
from qrecipe.report.runs import _mb, _r


def write_run_report(out: Path, metrics: Dict[str, Any], fps: Dict[str, Any],
                     plan_lines: Sequence[str] = ()) -> None:
    """report.md: what ran, quality, how to load it, expectations, time, the plan comparison
    the runner hands in (`plan_lines`), fingerprints."""
    size = metrics["size"]
    lines = [f"# qrecipe run: {metrics['recipe']}", "",
             f"- method **{metrics['method']}** via **{metrics['backend']}**, "
             f"{metrics['bits']}-bit, group size {metrics['group_size']}, "
             f"checkpoint format `{metrics['format']}`",
             f"- model `{metrics['model']['path']}` ({metrics['model']['architecture']}, "
             f"{metrics['model']['layers']} layers)",
             f"- quantized model: `model/` ({_mb(size['model_dir_bytes'])} MB on disk)"]
    if (metrics.get("dtype") or {}).get("why"):  # the dtype rule changed the compute dtype
        lines.append(f"- {metrics['dtype']['why']}")
    lines += [""] + _quality(metrics)
    lines += _load_snippet(metrics)
    lines += expectation_lines(metrics.get("expectations"))
    lines += ["## Time and memory", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in metrics["time_s"].items()]
    peak = (metrics.get("peak_rss_bytes") or {}).get("quantize")
    lines += ["", f"Peak RSS while quantizing: {_mb(peak)} MB.", ""]
    lines += list(plan_lines)
    lines += ["## Fingerprints", "",
              "```json", json.dumps(fps, indent=2, sort_keys=True), "```", "",
              "Repeat: `python -m qrecipe --config-dir <this dir> --config-name recipe.lock`", ""]
    write_text_nofollow(out, out / "report.md", "\n".join(lines))  # never through a link


def ppl_text(r: Dict[str, Any], nd: int = 4) -> str:
    """A perplexity as the report shows it: the number, or why there is none (never a
    saturated number: qrecipe/evaluation/perplexity.py)."""
    if r.get("ppl_problem"):
        return r["ppl_problem"]
    return "not measured" if r.get("ppl") is None else f"{r['ppl']:.{nd}f}"


def _quality(metrics: Dict[str, Any]) -> List[str]:
    """The Quality section: perplexity, footprint and speed of fp and quantized, Δppl."""
    ev, size = metrics.get("eval") or {}, metrics["size"]
    if not ev:
        return []
    q, fp, p = ev.get("quantized") or {}, ev.get("fp") or {}, ev["protocol"]
    lines = ["## Quality", "",
             f"Perplexity on {p['dataset']}: {p['windows']} windows of {p['seq_len']} "
             f"tokens, stride {p['stride']}, {p['scored_tokens']} scored tokens"
             + (f", a BOS token (id {p['bos_token_id']}) before each window"
                if p.get("bos_token_id") is not None else "") + ".", "",
             "| model | ppl | footprint MB | prefill tok/s | decode tok/s |",
             "|---|---|---|---|---|"]
    for label, r in (("fp", fp), ("quantized", q)):
        if r:
            s = r.get("speed") or {}
            lines.append(f"| {label} | {ppl_text(r)} | "
                         f"{_mb(r.get('footprint_bytes') or size.get('footprint_bytes'))} | "
                         f"{_r(s.get('prefill_tokens_per_s'), 1)} | "
                         f"{_r(s.get('decode_tokens_per_s'), 1)} |")
    lines += _eager_decodes(fp, q)
    if "delta_ppl" in ev:
        d = ev["delta_ppl"]
        lines += ["", f"Δppl vs fp: **{d:+.4f}**" if d is not None else
                  "Δppl vs fp: not computed (a perplexity above is not a measurement)"]
    lines += ["", p.get("paper_protocol") or "Not the GPTQ/AWQ papers' WikiText-2 protocol "
              "(seq 2048, full test set, stride 2048): do not compare with their tables.", ""]
    if ev.get("tasks"):
        lines += task_lines(ev["tasks"])
    return lines


def _eager_decodes(fp: Dict[str, Any], q: Dict[str, Any]) -> List[str]:
    """A line per model whose GPU decode was timed eagerly because its CUDA graph was refused
    (evaluation/speed.py `graph_error`): its figure is then not comparable with a graph's."""
    out = []
    for label, r in (("fp", fp), ("quantized", q)):
        s = (r or {}).get("speed") or {}
        if s.get("graph_error"):
            out.append(f"The {label} model's decode was timed eagerly, one step at a time "
                       f"(no CUDA graph: {s['graph_error']}); an eager step at batch 1 is "
                       "bound by Python and kernel launches.")
    return [""] + out if out else []


def _load_snippet(metrics: Dict[str, Any]) -> List[str]:
    """How a user reloads the checkpoint with the kernel this run measured
    (qrecipe/kernels/table.py)."""
    fmt, k = metrics.get("format"), (metrics.get("kernel") or {}).get("resolved")
    code = ["from transformers import AutoModelForCausalLM",
            'model = AutoModelForCausalLM.from_pretrained("model", device_map="auto")']
    if fmt in kernels.KERNELS and k:
        code = kernel_config.load_lines(fmt, kernels.get(fmt, k), int(metrics["bits"]),
                                        metrics["kernel"].get("device") or "cuda")
    ran = (metrics.get("kernel") or {}).get("loaded_modules")
    shown = k or ("dense" if fmt not in kernels.KERNELS else "not loaded (eval off)")
    lines = ["## Load it", "", "```python", *code, "```", "",
             f"Kernel: `{shown}`" + (f" (layers: {ran})" if ran else "") + "."]
    slower = _slower_than_fp(metrics)
    return lines + ([slower] if slower else []) + _measured(metrics) + [""]


def _measured(metrics: Dict[str, Any]) -> List[str]:
    """The kernels measured for this checkpoint's kind, which `auto` ranked by
    (qrecipe/kernels/measured.py)."""
    rows = (metrics.get("kernel") or {}).get("measured") or []
    if not rows:
        return []
    alts = ", ".join(f"{r['kernel']} {r['b1_vs_fp16']:.2f}x / {r['b8_vs_fp16']:.2f}x"
                     for r in rows)
    return [f"Measured decode against the fp model at batch 1 / 8 on {rows[0]['gpu']} in "
            f"{rows[0].get('dtype', REFERENCE_DTYPE)} (qrecipe/kernels/measured.json): {alts}."]


def _speeds(metrics: Dict[str, Any]):
    ev = metrics.get("eval") or {}
    return [((ev.get(m) or {}).get("speed") or {}).get("decode_tokens_per_s")
            for m in ("quantized", "fp")]


def _slower_than_fp(metrics: Dict[str, Any]) -> str:
    """One line when the quantized model decodes slower than the original: the kernel's
    reason (qrecipe/kernels/table.py `slower`)."""
    q, fp = _speeds(metrics)
    fmt, k = metrics.get("format"), (metrics.get("kernel") or {}).get("resolved")
    if q is None or fp is None or q >= fp or fmt not in kernels.KERNELS or not k:
        return ""
    kern = kernels.get(fmt, k)
    return (f"Decodes at {q:.1f} tok/s against {fp:.1f} for the original: "
            f"{kern.slower or kern.note}.")


# check_expectations' statuses (qrecipe/recipes/meta.py) as the run's last lines say them
VERDICTS = {"met": "met", "missed": "not met", "not comparable": "not comparable",
            "none": "no expectations"}


def final_lines(out: Path, metrics: Dict[str, Any], seconds: float) -> List[str]:
    """The last lines of a finished run on the terminal (and in run.log): the verdict against
    the recipe's expectations, ppl and Δppl, size on disk, speed, total time, the report."""
    exp = metrics.get("expectations") or {"status": "none", "checks": []}
    why = [f"{c['metric']} {c['got']} (expected {c['expected']} ±{c['tolerance']})"
           for c in exp["checks"] if c["status"] == "missed"]
    why = why or sorted({c["why"] for c in exp["checks"] if c.get("why")})
    lines = [f"result: {VERDICTS.get(exp['status'], exp['status'])}"
             + (f": {'; '.join(why)}" if why else "")]
    ev = metrics.get("eval") or {}
    if ev:
        q, fp = ev.get("quantized") or {}, ev.get("fp") or {}
        text = f"  {ppl_text(q)}" if q.get("ppl_problem") else f"  perplexity {ppl_text(q)}"
        if fp:
            d = ev.get("delta_ppl")
            text += f", fp {ppl_text(fp)}" + (f", Δppl {d:+.4f}" if d is not None else "")
        lines.append(text)
    else:
        lines.append("  perplexity: not evaluated (eval.enabled=false)")
    size = f"  size on disk {_mb(metrics['size']['model_dir_bytes'])} MB (model/)"
    qs, fs = _speeds(metrics)
    if qs is not None:
        size += (f"; decode {qs:.1f} tok/s" + (f" (fp {fs:.1f})" if fs is not None else "")
                 + f", kernel {(metrics.get('kernel') or {}).get('resolved') or 'dense'}")
    m, sec = divmod(int(round(seconds)), 60)
    lines += [size, f"  total time {m}m {sec:02d}s"]
    uncached = (metrics.get("overhead") or {}).get("uncached_bytecode")
    if uncached:
        took = sum((metrics["overhead"].get("imports_s") or {}).get(n, 0.0) for n in uncached)
        lines.append(f"  imports: {', '.join(uncached)} took {took:.1f} s with no bytecode cache "
                     "(PYTHONDONTWRITEBYTECODE or a read-only install); run python -m "
                     "compileall -q <site-packages> once where the jobs' image is built "
                     "(docs/gpu.md)")
    built = [k for k in (metrics.get("kernel_builds") or {}).get("kernels", [])
             if k.get("status") == "built"]
    if built:
        lines.append(f"  kernels: this job built {', '.join(k['name'] for k in built)} "
                     f"({sum(k.get('seconds') or 0.0 for k in built):.0f} s, in the "
                     "background); python -m qrecipe kernels build hardware=PROFILE prebuilds "
                     "them once per machine image (docs/gpu.md)")
    return lines + [f"  report: {Path(out) / 'report.md'}"]
