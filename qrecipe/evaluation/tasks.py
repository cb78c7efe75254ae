"""Task accuracy through lm-evaluation-harness (`lm-eval`), on the fp and the quantized model.

`eval.tasks` names lm-eval tasks: hub tasks by their lm-eval name (arc_easy, hellaswag, ...;
they download their data set), or a task shipped inside qrecipe (`LOCAL_TASKS`, an lm-eval task
YAML over a jsonl in qrecipe/evaluation/lm_tasks/, offline). Both models are scored with the same settings
(`eval.limit`, `eval.num_fewshot`, `eval.task_batch_size`, the run's seed); the fp scores are
cached, keyed by the model's fingerprint, the task config (incl. the local task's files) and the
lm-eval version. Accuracy retention is quantized / fp, per task and metric.

Nothing here is imported unless eval.tasks is set: lm-eval is an optional extra (`.[tasks]`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from qrecipe.errors import QRecipeError
from qrecipe.paths import resolve_path
from qrecipe.record.fingerprint import hash_files, sha256_text

log = logging.getLogger(__name__)

LOCAL_TASKS = {"qrecipe_mc": "pkg://qrecipe/evaluation/lm_tasks/qrecipe_mc.yaml"}
METRICS = ("acc", "acc_norm")
REQUIREMENT = "lm-eval==0.4.13"


def task_names(e) -> List[str]:
    return [str(t) for t in (e.get("tasks") or [])]


def check(e) -> None:
    """Cheap checks made before any weight is loaded (validate.py)."""
    names = task_names(e)
    if not names:
        return
    import importlib.util
    if importlib.util.find_spec("lm_eval") is None:  # found, not imported: a dry run stays light
        raise QRecipeError("eval.tasks needs lm-evaluation-harness", key="eval.tasks",
                           value=names, hint=f"pip install -c constraints.txt {REQUIREMENT} "
                           "(or the extra: pip install -e '.[tasks]')")
    for n in names:
        if not n or "/" in n:
            raise QRecipeError("not an lm-eval task name", key="eval.tasks", value=n,
                               allowed=f"{sorted(LOCAL_TASKS)} or an lm-eval task name")
    if e.get("limit") is not None and float(e.limit) <= 0:
        raise QRecipeError("must be positive (a count, or a fraction below 1)",
                           key="eval.limit", value=e.limit)
    if int(e.get("task_batch_size") or 1) < 1:
        raise QRecipeError("must be >= 1", key="eval.task_batch_size", value=e.task_batch_size)


def _local_task(name: str) -> Dict[str, Any]:
    """The shipped YAML as a dict whose data file is absolute (lm-eval reads paths from the cwd)."""
    import yaml

    path = resolve_path(LOCAL_TASKS[name], key="eval.tasks")
    cfg = yaml.safe_load(path.read_text())
    files = cfg["dataset_kwargs"]["data_files"]
    cfg["dataset_kwargs"]["data_files"] = {k: str(path.parent / v) for k, v in files.items()}
    return cfg


def _task_files(name: str) -> List[Path]:
    if name not in LOCAL_TASKS:
        return []
    cfg = _local_task(name)
    yaml_path = resolve_path(LOCAL_TASKS[name], key="eval.tasks")
    return [yaml_path] + [Path(p) for p in cfg["dataset_kwargs"]["data_files"].values()]


def settings(e, seed: int) -> Dict[str, Any]:
    """Everything that determines the scores besides the model: recorded and used as cache key."""
    import lm_eval
    names = task_names(e)
    return {"tasks": names, "limit": e.get("limit"), "num_fewshot": e.get("num_fewshot"),
            "batch_size": int(e.get("task_batch_size") or 1), "seed": seed,
            "lm_eval_version": getattr(lm_eval, "__version__", "unknown"),
            "local_task_files_sha256": {n: hash_files(_task_files(n)) for n in names
                                        if n in LOCAL_TASKS}}


def score(model, tokenizer, s: Dict[str, Any], label: str) -> Dict[str, Dict[str, float]]:
    """{task: {acc, acc_stderr, acc_norm, acc_norm_stderr}} for one loaded model."""
    import time

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    t0 = time.perf_counter()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=s["batch_size"])
    tasks = [_local_task(n) if n in LOCAL_TASKS else n for n in s["tasks"]]
    try:
        out = simple_evaluate(model=lm, tasks=tasks, num_fewshot=s["num_fewshot"],
                              limit=s["limit"], task_manager=_task_manager(s["tasks"]),
                              log_samples=False, bootstrap_iters=1000, random_seed=s["seed"],
                              numpy_random_seed=s["seed"], torch_random_seed=s["seed"],
                              fewshot_random_seed=s["seed"])
    except (KeyError, ValueError) as err:  # lm-eval's words for an unknown task name
        raise QRecipeError(f"lm-eval could not run the tasks ({type(err).__name__}: "
                           f"{str(err)[:200]})", key="eval.tasks", value=s["tasks"],
                           allowed=f"{sorted(LOCAL_TASKS)} or an lm-eval task name") from None
    res = {}
    for name in s["tasks"]:
        r = out["results"].get(name, {})
        res[name] = {f"{m}{sfx}": r.get(f"{m}{sfx},none") for m in METRICS
                     for sfx in ("", "_stderr") if f"{m}{sfx},none" in r}
        res[name]["samples"] = (out.get("n-samples", {}).get(name) or {}).get("effective")
    log.info("tasks (%s): %s in %.1fs", label, ", ".join(
        f"{n} acc {v.get('acc', float('nan')):.4f}" for n, v in res.items()),
        time.perf_counter() - t0)
    return res


def _task_manager(names: List[str]):
    from lm_eval.tasks import TaskManager
    # Indexing lm-eval's thousands of task YAMLs takes long: skip it when every task is ours.
    return TaskManager(include_defaults=not all(n in LOCAL_TASKS for n in names))


def retention(fp: Dict[str, Dict[str, float]], q: Dict[str, Dict[str, float]]):
    """quantized / fp for each task and metric (None where fp is 0 or missing)."""
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for name, qr in q.items():
        f = fp.get(name) or {}
        out[name] = {m: (qr[m] / f[m] if f.get(m) and qr.get(m) is not None else None)
                     for m in METRICS if m in qr}
    return out


def evaluate_tasks(e, seed: int, q_model, tokenizer, model_fp: str, dtype: str, cache,
                   load_fp) -> Dict[str, Any]:
    """The `tasks` block of metrics.json. `load_fp()` loads the fp model (only on a cache miss)."""
    s = settings(e, seed)
    res: Dict[str, Any] = {"settings": s}
    if e.baseline:
        key = sha256_text(repr(sorted({"model": model_fp, "dtype": dtype, **s}.items())))
        fp = cache.load_json("task_baselines", key)
        if fp is None:
            fp_model = load_fp()
            fp = score(fp_model, tokenizer, s, "fp")
            del fp_model
            cache.save_json("task_baselines", key, fp)
        else:
            log.info("tasks (fp): from cache")
        res["fp"] = fp
    res["quantized"] = score(q_model, tokenizer, s, "quantized")
    if "fp" in res:
        res["retention"] = retention(res["fp"], res["quantized"])
    return res


def summary_columns(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Flat columns for the sweep table: per task acc, stderr, fp acc and retention, and the mean
    retention over tasks (`acc_retention`) that the plots use."""
    t = (metrics.get("eval") or {}).get("tasks") or {}
    q, fp, ret = t.get("quantized") or {}, t.get("fp") or {}, t.get("retention") or {}
    cols: Dict[str, Any] = {}
    for name, r in q.items():
        cols[f"acc:{name}"] = _r(r.get("acc"))
        cols[f"acc_stderr:{name}"] = _r(r.get("acc_stderr"))
        cols[f"fp_acc:{name}"] = _r((fp.get(name) or {}).get("acc"))
        cols[f"retention:{name}"] = _r((ret.get(name) or {}).get("acc"))
    rs = [v.get("acc") for v in ret.values() if v.get("acc") is not None]
    cols["acc_retention"] = _r(sum(rs) / len(rs)) if rs else None
    return cols


def _r(v, nd: int = 4):
    return None if v is None else round(float(v), nd)


def report_lines(t: Dict[str, Any]) -> List[str]:
    """The report.md section."""
    s = t["settings"]
    lines = ["## Task accuracy (lm-evaluation-harness)", "",
             f"lm-eval {s['lm_eval_version']}, num_fewshot {s['num_fewshot']}, limit "
             f"{s['limit']}, batch size {s['batch_size']}, seed {s['seed']}.", "",
             "| task | metric | fp | quantized | ± stderr | retention |", "|---|---|---|---|---|---|"]
    for name, q in t["quantized"].items():
        for m in METRICS:
            if m not in q:
                continue
            fp = (t.get("fp") or {}).get(name, {}).get(m)
            ret = (t.get("retention") or {}).get(name, {}).get(m)
            lines.append(f"| {name} | {m} | {_fmt(fp)} | {_fmt(q[m])} | "
                         f"{_fmt(q.get(m + '_stderr'))} | "
                         f"{'' if ret is None else f'{100 * ret:.1f}%'} |")
    return lines + [""]


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}"
