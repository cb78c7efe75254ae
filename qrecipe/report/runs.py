"""The comparison table + plots for any set of runs (a sweep's summary).

`python -m qrecipe.report DIR [DIR ...] [--out OUT]` rebuilds the table from output
directories (a sweep root, or run directories, searched recursively). A run without a manifest is
incomplete: it is listed with its error (from error.json) or as "incomplete", never as a result.

A sweep job that leaves no run directory to read (a dry run writes nothing; a job rejected before
it held its directory wrote no error.json) is recorded by the sweep callback as a job row under
SWEEP_ROOT/JOB_ROWS/ (`record_job`), and is a row of the summary like the others: "dry run:
valid", or its status and error.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from hydra.types import RunMode
from omegaconf import OmegaConf

from qrecipe.backends.capabilities import CAPABILITIES
from qrecipe.boundary.jsonfile import read_object
from qrecipe.boundary.yamlfile import read_yaml
from qrecipe.errors import QRecipeError
from qrecipe.evaluation.tasks import summary_columns
from qrecipe.record.atomic import write_bytes
from qrecipe.record.outputs import ERROR, cpu_name, run_state
from qrecipe.report.plots import write_plots

COLUMNS = ["run", "status", "recipe", "method", "backend", "bits", "group_size", "family",
           "ppl", "fp_ppl", "delta_ppl", "ppl_problem", "size_mb", "footprint_mb",
           "fp_footprint_mb", "quantize_s", "total_s", "peak_rss_mb", "peak_gpu_mb",
           "prefill_tok_s", "decode_tok_s", "pareto", "measured_on", "gpu", "error"]
CALIBRATED, DATA_FREE = "calibrated", "data-free"

_MB = 1024 * 1024
JOB_ROWS = ".job_rows"  # in a sweep root: one JSON row per job that left no directory to read
DRY_VALID, DRY_REJECTED = "dry run: valid", "dry run: rejected"


def _mb(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v / _MB, 1)


def _r(v: Optional[float], nd: int = 3) -> Optional[float]:
    return None if v is None else round(v, nd)


def _read(path: Path) -> Optional[dict]:
    """A run's JSON record, read within the limits (a received directory is data)."""
    try:
        return read_object(path, key=str(path))
    except QRecipeError:
        return None


def run_row(run_dir: Path, name: Optional[str] = None) -> Dict[str, Any]:
    """One table row from a run directory, complete or not."""
    row: Dict[str, Any] = {c: None for c in COLUMNS}
    row["run"] = name or run_dir.name
    cfg = _read_lock(run_dir)
    if cfg:
        row.update(recipe=cfg.get("recipe_name"), method=cfg["method"].get("name"),
                   backend=cfg["method"].get("backend"), bits=cfg["bits"].get("width"),
                   group_size=cfg["bits"].get("group_size"))
    metrics = _read(run_dir / "metrics.json")
    state = run_state(run_dir)
    if not state.complete or metrics is None:
        err = _read(run_dir / ERROR) or {}
        row["status"] = err.get("status", "incomplete")
        row["error"] = (err.get("error") or f"{state.describe()}: the run did not finish; "
                        f"qrecipe resume {run_dir}")[:300]
        return row
    ev = metrics.get("eval") or {}
    q, fp = ev.get("quantized") or {}, ev.get("fp") or {}
    size, t = metrics.get("size", {}), metrics.get("time_s", {})
    env = _read(run_dir / "env.json") or {}
    row.update(
        status="complete", recipe=metrics.get("recipe"), method=metrics.get("method"),
        backend=metrics.get("backend"), bits=metrics.get("bits"),
        group_size=metrics.get("group_size"), ppl=_r(q.get("ppl")), fp_ppl=_r(fp.get("ppl")),
        delta_ppl=_r(ev.get("delta_ppl")),
        # a perplexity that is not a measurement (overflow, NaN): shown instead of a number
        ppl_problem=q.get("ppl_problem") or fp.get("ppl_problem"),
        size_mb=_mb(size.get("model_dir_bytes")),
        footprint_mb=_mb(size.get("footprint_bytes")),
        fp_footprint_mb=_mb(size.get("fp_footprint_bytes")),
        quantize_s=_r(t.get("quantize"), 1), total_s=_r(sum(t.values()), 1) if t else None,
        peak_rss_mb=_mb((metrics.get("peak_rss_bytes") or {}).get("quantize")),
        peak_gpu_mb=_mb((metrics.get("peak_gpu_bytes") or {}).get("quantize")),
        prefill_tok_s=_r((q.get("speed") or {}).get("prefill_tokens_per_s"), 1),
        decode_tok_s=_r((q.get("speed") or {}).get("decode_tokens_per_s"), 1),
        family=family(metrics), measured_on=measured_on(env),
        gpu=env.get("cuda_visible_devices"))
    row.update(summary_columns(metrics))  # per-task accuracy, stderr, retention (lm-eval)
    return row


def family(metrics: Dict[str, Any]) -> Optional[str]:
    """calibrated or data-free: whether the run's quantizer read calibration rows (the scheme's
    own answer where it depends on options, e.g. FP8 dynamic/static), else the method's entry in
    the capability table."""
    used = (metrics.get("quantize_details") or {}).get("uses_calibration")
    if used is None:
        support = CAPABILITIES.get(str(metrics.get("backend")), {}).get(str(metrics.get("method")))
        used = None if support is None else support.needs_calibration
    return None if used is None else (CALIBRATED if used else DATA_FREE)


def measured_on(env: Dict[str, Any]) -> Optional[str]:
    """Where the run's figures were measured: its GPU, else its CPU; `this machine` when the
    run's CPU, core count and platform are this machine's (a received run is marked apart)."""
    if not env:
        return None
    gpus = env.get("gpus") or []
    where = gpus[0] if gpus else f"{env.get('cpu') or 'CPU'} x {env.get('cpu_count')}"
    # runs written before env.json named the CPU: the platform and core count alone
    here = (env.get("cpu") in (None, cpu_name()) and env.get("cpu_count") == os.cpu_count()
            and env.get("platform") == platform.platform() and not gpus)
    return f"this machine ({where})" if here else where


def pareto(rows: List[Dict[str, Any]]) -> None:
    """Marks pareto=yes on each complete row no other complete row beats on both size on disk
    and perplexity (ties kept): the choices worth making."""
    done = [r for r in rows if r["status"] == "complete" and r["ppl"] is not None
            and r["size_mb"] is not None and not r.get("ppl_problem")]
    for r in done:
        r["pareto"] = "no" if any(
            o["size_mb"] <= r["size_mb"] and o["ppl"] <= r["ppl"]
            and (o["size_mb"], o["ppl"]) != (r["size_mb"], r["ppl"]) for o in done) else "yes"


def _read_lock(run_dir: Path) -> Optional[dict]:
    for p in (run_dir / "recipe.lock.yaml", run_dir / ".hydra" / "config.yaml"):
        if p.is_file():
            try:
                data = read_yaml(p, what="run record")[1]
            except QRecipeError:  # beyond the limits, or not YAML: no config to show
                continue
            if isinstance(data, dict):
                return data
    return None


def find_runs(paths: Iterable[Path]) -> List[Path]:
    """Run directories under the given paths: any folder holding .hydra/ or metrics.json."""
    found: List[Path] = []
    for p in paths:
        p = Path(p)
        cands = [p] + sorted(d.parent for d in p.rglob(".hydra")) if p.is_dir() else []
        for d in cands:
            if ((d / ".hydra").is_dir() or (d / "metrics.json").is_file()) and d not in found:
                found.append(d)
    return found


def config_row(name: str, cfg: Dict[str, Any], status: str,
               error: Optional[str] = None) -> Dict[str, Any]:
    """The row of a job known only by its composed config (nothing on disk to read)."""
    row: Dict[str, Any] = {c: None for c in COLUMNS}
    method, bits = cfg.get("method") or {}, cfg.get("bits") or {}
    row.update(run=name, status=status, recipe=cfg.get("recipe_name"), method=method.get("name"),
               backend=method.get("backend"), bits=bits.get("width"),
               group_size=bits.get("group_size"), error=error and error[:300])
    return row


def job_row(config: Any, job_return: Any) -> Optional[Dict[str, Any]]:
    """The row of a sweep job whose run directory does not say how it ended (None: it does,
    with its metrics or error.json). job_return.return_value: what qrecipe's entry point
    returns, {status, error, dry_run}; job_return.cfg: the job's composed config."""
    if config.hydra.mode != RunMode.MULTIRUN:  # a single run: no sweep, no report
        return None
    res = job_return.return_value if job_return.status.name == "COMPLETED" else None
    out = Path(config.hydra.runtime.output_dir)
    if not isinstance(res, dict) or (out / ERROR).is_file() or run_state(out).complete:
        return None
    if res.get("status") == "ok" and not res.get("dry_run"):
        return None
    status = DRY_VALID if res.get("status") == "ok" else \
        (DRY_REJECTED if res.get("dry_run") and res.get("status") == "user_error"
         else str(res.get("status")))
    name = os.path.relpath(out, config.hydra.sweep.dir)
    cfg = OmegaConf.to_container(job_return.cfg, resolve=False)
    return config_row(name, cfg, status, res.get("error"))


def record_job(root: Path, row: Dict[str, Any]) -> None:
    """Keep a job's row in the sweep root until the report is written (jobs of a parallel or
    SLURM sweep run in other processes than the one that writes it)."""
    name = str(row["run"]).replace("/", "_")
    write_bytes(Path(root) / JOB_ROWS / f"{name}.json", json.dumps(row).encode())


def recorded_jobs(root: Path) -> List[Dict[str, Any]]:
    rows = [_read(p) for p in sorted((Path(root) / JOB_ROWS).glob("*.json"))]
    return [r for r in rows if isinstance(r, dict) and r.get("run")]


def write_summary(root: Path, runs: List[Path], plots: bool = True,
                  recorded: Iterable[Dict[str, Any]] = ()) -> List[Dict[str, Any]]:
    """summary.csv and summary.md (and the plots) of the runs and of the recorded job rows (a
    recorded row stands for the run directory of the same name)."""
    extra = {r["run"]: {c: r.get(c) for c in COLUMNS} for r in recorded}
    rows = [run_row(r, str(r.relative_to(root)) if r.is_relative_to(root) else str(r))
            for r in runs]
    rows = [r for r in rows if r["run"] not in extra] + list(extra.values())
    pareto(rows)
    # best perplexity first; rows without one after, by configuration
    rows.sort(key=lambda r: (r["ppl"] is None or bool(r.get("ppl_problem")), r["ppl"] or 0,
                             str(r["method"]), str(r["backend"]), r["bits"] or 0,
                             r["group_size"] or 0, r["run"]))
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "summary.csv", "w", newline="") as f:
        extra = sorted({k for r in rows for k in r} - set(COLUMNS))  # task columns
        w = csv.DictWriter(f, fieldnames=COLUMNS + extra, restval="")
        w.writeheader()
        w.writerows(rows)
    (root / "summary.md").write_text(summary_markdown(rows))
    if plots:
        write_plots(root, rows)
    return rows


def summary_markdown(rows: List[Dict[str, Any]]) -> str:
    cols = ["run", "status", "method", "backend", "bits", "group_size", "family", "ppl",
            "delta_ppl", "size_mb", "footprint_mb", "quantize_s", "peak_rss_mb", "decode_tok_s",
            "pareto", "measured_on"]
    cols += sorted({k for r in rows for k in r if k.startswith(("acc:", "acc_stderr:",
                                                                  "retention:"))})
    fmt = lambda v: "" if v is None else str(v)  # noqa: E731
    cell = lambda r, c: fmt(r.get("ppl_problem") if c == "ppl" and r.get("ppl_problem")  # noqa: E731
                            else r.get(c))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    fps = sorted({r["fp_ppl"] for r in rows if r["fp_ppl"] is not None})
    head = "# Sweep summary\n\n"
    if len(fps) == 1:
        fpm = next((r["fp_footprint_mb"] for r in rows if r["fp_footprint_mb"]), None)
        head += f"Unquantized baseline: ppl {fps[0]}, footprint {fpm} MB.\n\n"
    elif fps:  # jobs that loaded the model in different dtypes: each row's own baseline
        head += (f"Unquantized baselines: ppl {', '.join(map(str, fps))} (the model loaded in "
                 "each job's dtype); delta_ppl is against the row's own.\n\n")
    bad = [r for r in rows if r["status"] not in ("complete", DRY_VALID)]
    tail = ""
    if bad:
        tail = "\n## Runs that did not complete\n\n" + "\n".join(
            f"- `{r['run']}` ({r['status']}): {r['error']}" for r in bad) + "\n"
    return head + "\n".join(lines) + "\n" + tail


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qrecipe.report.runs",
                                 description="Rebuild the comparison table from output dirs.")
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="where to write summary.* (default: first DIR)")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    missing = [str(d) for d in a.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs, recorded = find_runs(a.dirs), [r for d in a.dirs for r in recorded_jobs(d)]
    if not runs and not recorded:
        print("error: no run directories (with .hydra/ or metrics.json) found", file=sys.stderr)
        return 2
    out = a.out or a.dirs[0]
    rows = write_summary(out, runs, plots=not a.no_plots, recorded=recorded)
    for r in rows:
        if r["status"] not in ("complete", DRY_VALID):
            print(f"skipped {r['run']}: {r['status']} ({r['error']})", file=sys.stderr)
    done = sum(r["status"] == "complete" for r in rows)
    print(f"{done}/{len(rows)} complete runs -> {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
