"""The sweep's charts, from the summary rows: perplexity vs bits per method, memory per
configuration, the perplexity/size Pareto front, and task accuracy with retention when the runs
measured it (eval.tasks). Agg backend: no display needed."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List


def _label(r: Dict[str, Any]) -> str:
    return f"{r['method']}/{r['backend']} w{r['bits']}g{r['group_size']}"


def write_plots(root: Path, rows: List[Dict[str, Any]]) -> List[Path]:
    """The charts of the complete runs with a perplexity, into root; their paths."""
    import matplotlib  # deferred: matplotlib (the optional `report` extra), only for charts
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib

    done = [r for r in rows if r["status"] == "complete" and r["ppl"] is not None]
    if not done:
        return []
    paths = [_ppl_vs_bits(plt, root, done), _memory(plt, root, done), _pareto(plt, root, done)]
    if any(k.startswith("acc:") for r in done for k in r):
        paths.append(_accuracy(plt, root, done))
    return paths


def _ppl_vs_bits(plt, root: Path, done: List[Dict[str, Any]]) -> Path:
    """1. Perplexity vs bits, one line per method/backend/group size."""
    fp_ppl = next((r["fp_ppl"] for r in done if r["fp_ppl"] is not None), None)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = defaultdict(list)
    for r in done:
        series[f"{r['method']}/{r['backend']} g{r['group_size']}"].append((r["bits"], r["ppl"]))
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    if fp_ppl:
        ax.axhline(fp_ppl, color="grey", linestyle="--", label=f"unquantized ({fp_ppl:.2f})")
    ax.set_xlabel("weight bits")
    ax.set_ylabel("perplexity (lower is better)")
    _yscale(ax, [r["ppl"] for r in done] + ([fp_ppl] if fp_ppl else []))
    ax.set_xticks(sorted({r["bits"] for r in done}))
    ax.set_title("Perplexity vs bits")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, root / "ppl_vs_bits.png")


def _memory(plt, root: Path, done: List[Dict[str, Any]]) -> Path:
    """2. Memory per configuration: footprint in memory, size on disk, peak RSS while
    quantizing."""
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(done) + 2), 4.5))
    bars = [("footprint in memory", "footprint_mb"), ("size on disk", "size_mb"),
            ("peak RSS quantizing", "peak_rss_mb")]
    width = 0.8 / len(bars)
    for i, (name, col) in enumerate(bars):
        xs = [j + (i - 1) * width for j in range(len(done))]
        ax.bar(xs, [r[col] or 0 for r in done], width, label=name)
    fp_mem = next((r["fp_footprint_mb"] for r in done if r["fp_footprint_mb"]), None)
    if fp_mem:
        ax.axhline(fp_mem, color="grey", linestyle="--", label=f"unquantized ({fp_mem} MB)")
    return _save_per_config(plt, fig, ax, done, "MB", "Memory usage comparison",
                            root / "memory.png")


def _pareto(plt, root: Path, done: List[Dict[str, Any]]) -> Path:
    """3. Perplexity vs size on disk, coloured by family (calibrated / data-free); the front is
    the rows report/runs.py marked pareto (no other run beats them on both); rows measured on
    another machine (a GPU) are hollow and say where."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"calibrated": "C0", "data-free": "C1"}
    for fam in sorted({str(r.get("family")) for r in done}):
        rows = [r for r in done if str(r.get("family")) == fam]
        here = [str(r.get("measured_on") or "this machine").startswith("this machine")
                for r in rows]
        for mine in (True, False):
            pts = [r for r, h in zip(rows, here) if h == mine]
            if pts:
                ax.scatter([r["size_mb"] or 0 for r in pts], [r["ppl"] for r in pts], zorder=3,
                           label=fam + ("" if mine else " (other machine)"),
                           color=colours.get(fam, "C2") if mine else "none",
                           edgecolors=colours.get(fam, "C2"))
    for r in done:
        where = str(r.get("measured_on") or "")
        lab = _label(r) + ("" if not where or where.startswith("this machine") else f" [{where}]")
        ax.annotate(lab, (r["size_mb"] or 0, r["ppl"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    front = sorted((r["size_mb"] or 0, r["ppl"]) for r in done if r.get("pareto") == "yes")
    if front:
        ax.step([f[0] for f in front], [f[1] for f in front], where="post", color="red",
                label="Pareto front")
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel("perplexity (lower is better)")
    _yscale(ax, [r["ppl"] for r in done])
    ax.set_title("Perplexity vs size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, root / "pareto.png")


def _accuracy(plt, root: Path, done: List[Dict[str, Any]]) -> Path:
    """4. Task accuracy per configuration (lm-eval), with stderr bars and the fp accuracy, and
    the retention (quantized / fp) written on each bar."""
    tasks = sorted({k.split(":", 1)[1] for r in done for k in r if k.startswith("acc:")})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(done) + 2), 4.5))
    width = 0.8 / len(tasks)
    for i, t in enumerate(tasks):
        xs = [j + (i - (len(tasks) - 1) / 2) * width for j in range(len(done))]
        ys = [r.get(f"acc:{t}") or 0 for r in done]
        ax.bar(xs, ys, width, yerr=[r.get(f"acc_stderr:{t}") or 0 for r in done], capsize=3,
               label=t)
        for x, y, r in zip(xs, ys, done):
            ret = r.get(f"retention:{t}")
            if ret is not None:
                ax.annotate(f"{100 * ret:.1f}%", (x, y / 2), ha="center", fontsize=8,
                            color="white", fontweight="bold")
        fp = next((r.get(f"fp_acc:{t}") for r in done if r.get(f"fp_acc:{t}")), None)
        if fp:
            ax.axhline(fp, linestyle="--", color=f"C{i}", alpha=0.6, label=f"{t} fp ({fp:.3f})")
    return _save_per_config(plt, fig, ax, done, "accuracy (higher is better)",
                            "Task accuracy (lm-eval) and retention vs unquantized",
                            root / "accuracy.png")


def _yscale(ax, values) -> None:
    """Log scale only when perplexities span more than 10x (a 2-bit run next to 8-bit ones)."""
    v = [x for x in values if x and x > 0]
    if v and max(v) / min(v) > 10:
        ax.set_yscale("log")


def _save_per_config(plt, fig, ax, done: List[Dict[str, Any]], ylabel: str, title: str,
                     path: Path) -> Path:
    """A chart of bars per configuration: one label per run under its bars, then saved."""
    ax.set_xticks(range(len(done)))
    ax.set_xticklabels([_label(r) for r in done], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
