"""report.md for one run, written from its metrics and fingerprints."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from qrecipe.report.runs import _mb, _r


def write_run_report(out: Path, metrics: Dict[str, Any], fps: Dict[str, Any],
                     plan_lines: Sequence[str] = ()) -> None:
    """report.md: what ran, quality, how to load it, expectations, time, the plan comparison
    the runner hands in (`plan_lines`), fingerprints."""
    ev = metrics.get("eval") or {}
    q, fp = ev.get("quantized") or {}, ev.get("fp") or {}
    size = metrics["size"]
    lines = [f"# qrecipe run: {metrics['recipe']}", "",
             f"- method **{metrics['method']}** via **{metrics['backend']}**, "
             f"{metrics['bits']}-bit, group size {metrics['group_size']}, "
             f"checkpoint format `{metrics['format']}`",
             f"- model `{metrics['model']['path']}` ({metrics['model']['architecture']}, "
             f"{metrics['model']['layers']} layers)",
             f"- quantized model: `model/` ({_mb(size['model_dir_bytes'])} MB on disk)", ""]
    if (metrics.get("dtype") or {}).get("why"):  # the dtype rule changed the model's dtype
        lines[-1:] = [f"- {metrics['dtype']['why']}", ""]
    if ev:
        p = ev["protocol"]
        lines += ["## Quality", "",
                  f"Perplexity on {p['dataset']}: {p['windows']} windows of {p['seq_len']} "
                  f"tokens, stride {p['stride']}, {p['scored_tokens']} scored tokens.", "",
                  "| model | ppl | footprint MB | prefill tok/s | decode tok/s |",
                  "|---|---|---|---|---|"]
        for label, r in (("fp", fp), ("quantized", q)):
            if r:
                s = r.get("speed") or {}
                lines.append(f"| {label} | {_r(r['ppl'], 4)} | "
                             f"{_mb(r.get('footprint_bytes') or size.get('footprint_bytes'))} | "
                             f"{_r(s.get('prefill_tokens_per_s'), 1)} | "
                             f"{_r(s.get('decode_tokens_per_s'), 1)} |")
        if "delta_ppl" in ev:
            lines += ["", f"Δppl vs fp: **{ev['delta_ppl']:+.4f}**"]
        lines += ["", p.get("paper_protocol") or "Not the GPTQ/AWQ papers' WikiText-2 protocol "
                  "(seq 2048, full test set, stride 2048): do not compare with their tables.", ""]
        if ev.get("tasks"):
            from qrecipe.evaluation.tasks import report_lines as task_lines
            lines += task_lines(ev["tasks"])
    lines += _load_snippet(metrics)
    from qrecipe.recipes.meta import report_lines
    lines += report_lines(metrics.get("expectations"))
    lines += ["## Time and memory", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in metrics["time_s"].items()]
    peak = (metrics.get("peak_rss_bytes") or {}).get("quantize")
    lines += ["", f"Peak RSS while quantizing: {_mb(peak)} MB.", ""]
    lines += list(plan_lines)
    lines += ["## Fingerprints", "",
              "```json", json.dumps(fps, indent=2, sort_keys=True), "```", "",
              "Repeat: `python -m qrecipe --config-dir <this dir> --config-name recipe.lock`", ""]
    (out / "report.md").write_text("\n".join(lines))


def _load_snippet(metrics: Dict[str, Any]) -> List[str]:
    """How a user reloads the checkpoint with the kernel this run measured (qrecipe/kernels/table.py)."""
    from qrecipe.kernels import hf_config as kernel_config
    from qrecipe.kernels import table as kernels
    fmt, k = metrics.get("format"), (metrics.get("kernel") or {}).get("resolved")
    code = ["from transformers import AutoModelForCausalLM",
            'model = AutoModelForCausalLM.from_pretrained("model", device_map="auto")']
    if fmt in kernels.KERNELS and k:
        code = kernel_config.load_lines(fmt, kernels.get(fmt, k), int(metrics["bits"]),
                                  metrics["kernel"].get("device") or "cuda")
    ran = (metrics.get("kernel") or {}).get("loaded_modules")
    shown = k or ("dense" if fmt not in kernels.KERNELS else "not loaded (eval off)")
    return ["## Load it", "", "```python", *code, "```", "",
            f"Kernel: `{shown}`" + (f" (layers: {ran})" if ran else "") + ".", ""]
