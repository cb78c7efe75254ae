"""Advice for `qrecipe plan`: the decision framework (which method for which goal, and why), the
shipped recipes that fit the planned model and hardware (with the override that makes a near
miss fit), and, given output directories, the measured runs ranked instead of the rules."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from qrecipe.backends.capabilities import auto_backend, plan_format, time_grows_with_rows
from qrecipe.inputs.offline import hub_off
from qrecipe.paths import config_dir, recipes_dir
from qrecipe.report.runs import find_runs, run_row

GB = 1e9

# The decision framework, one rule per goal: (goal, formats it points to, why).
RULES = [
    ("production inference (vLLM, TGI)", ("w4",),
     "GPTQ or AWQ w4 (g128 where it divides): calibrated, and served by fast int4 kernels"),
    ("fine-tuning (QLoRA)", ("nf4",),
     "bitsandbytes NF4 + double quant: what QLoRA trains adapters on; no calibration"),
    ("no calibration data", ("nf4", "int8", "w4"),
     "bitsandbytes (NF4 / LLM.int8) or RTN: data-free, quantize in seconds"),
    ("best accuracy at 4 bits", ("w4",),
     "GPTQ with act-order (method.desc_act=true) or AWQ"),
    ("accuracy paramount", ("w8", "int8"),
     "8-bit: on SmolLM2 GPTQ w8 Δppl -0.001 and LLM.int8 +0.73, against +9.8 for GPTQ w4 "
     "(docs/benchmarks.md)"),
]


def rules(rows: Dict[str, dict]) -> List[Dict[str, Any]]:
    out = []
    for goal, formats, why in RULES:
        fit = [f for f in formats if rows[f]["fits"]]
        out.append({"goal": goal, "formats": list(formats), "why": why,
                    "fits": bool(fit)})
    out.append({"goal": "2-bit", "formats": ["w2"], "fits": rows["w2"]["fits"],
                "why": "never without a measured result: 2-bit destroys small models "
                       "(SmolLM2 w2: ppl 187,733 against 30.6, docs/benchmarks.md)"})
    return out


def recipe_format(method: str, width: int) -> str:
    """The plan row that sizes a method at a width."""
    if method == "bnb":
        return "nf4" if width == 4 else "int8"
    return plan_format(method) or f"w{width}"


def default_options() -> Dict[str, str]:
    """The primary config's choice in each group (conf/config.yaml's defaults list)."""
    found: Dict[str, str] = {}
    for d in OmegaConf.to_container(OmegaConf.load(config_dir() / "config.yaml").defaults):
        if isinstance(d, dict):  # `optional tuned_method: ${...}`: chosen from the others
            found.update({str(k): str(v) for k, v in d.items() if "/" not in str(k)
                          and not str(k).startswith(("override ", "optional "))})
    return found


def _tuned(groups: Dict[str, str]) -> Dict[str, Any]:
    """The measured settings tuned=X applies to the method (conf/tuned_method/X/METHOD.yaml,
    as the primary config's defaults list picks it); {} for tuned=none."""
    f = config_dir() / "tuned_method" / groups.get("tuned", "none") / f"{groups['method']}.yaml"
    return OmegaConf.to_container(OmegaConf.load(f)) if f.is_file() else {}


def shipped_recipes() -> List[Dict[str, Any]]:
    """Each shipped recipe's method, backend, bits and group size, calibration, the model it is
    for, the hub inputs it reads and the Δppl it promises (meta.expected), read from its YAML."""
    conf, found, primary = config_dir(), [], default_options()
    for f in sorted(recipes_dir().glob("*.yaml")):
        r = OmegaConf.to_container(OmegaConf.load(f))
        own = {k.split("/")[-1]: v for d in r.get("defaults", []) if isinstance(d, dict)
               for k, v in d.items()}
        if "method" not in own:
            continue  # a comparison recipe: its method is the sweep's (smollm2_compare)
        groups = {**primary, **own}
        opt = {g: OmegaConf.to_container(OmegaConf.load(conf / g / f"{groups[g]}.yaml"))
               for g in ("model", "method", "bits", "calibration", "eval", "hardware")}
        tuned = _tuned(groups)  # read after the groups, before the recipe's own values
        bits = {**opt["bits"], **(tuned.get("bits") or {}), **(r.get("bits") or {})}
        cal = {**opt["calibration"], **(tuned.get("calibration") or {}),
               **(r.get("calibration") or {})}
        expected = ((r.get("meta") or {}).get("expected") or {}).get("delta_ppl") or {}
        found.append({"recipe": f.stem, "method": groups["method"],
                      "backend": _backend(r, groups["method"], opt),
                      "format": recipe_format(groups["method"], int(bits["width"])),
                      "group_size": int(bits["group_size"]),
                      "num_samples": int(cal["num_samples"]), "seq_len": int(cal["seq_len"]),
                      "model": groups["model"], "model_path": opt["model"].get("path"),
                      "hub_inputs": [f"{g}={groups[g]}" for g in ("calibration", "eval")
                                     if {**opt[g], **(r.get(g) or {})}.get("source") == "hub"],
                      "expected_delta_ppl": expected.get("value")})
    return found


def _backend(recipe: dict, method: str, opt: Dict[str, Any]) -> Optional[str]:
    """The backend a recipe runs on: its own, else its method's default, with `auto` settled
    for the recipe's device as a run settles it (backends/capabilities.py auto_backend)."""
    backend = (recipe.get("method") or {}).get("backend", opt["method"]["backend"])
    if backend != "auto":
        return backend
    device = {**opt["hardware"], **(recipe.get("hardware") or {})}.get("device", "cpu")
    return auto_backend(method, device)


def _peak(rec: dict, row: dict, settings: dict, num_samples: Optional[int] = None):
    """Peak while quantizing with the recipe's own calibration (the calibration activations
    scale with its tokens; the plan computed them for --samples x --seq-len)."""
    q = next((q for q in row["quantize"]
              if q["method"] == rec["method"] and q["backend"] == rec["backend"]), None)
    if q is None:
        return None
    tokens = (num_samples or rec["num_samples"]) * rec["seq_len"]
    scale = tokens / (settings["num_samples"] * settings["seq_len"])
    return q["peak_bytes"] + q["calib_bytes"] * (scale - 1), q["calib_bytes"] * scale


def recipe_fits(rec: dict, row: dict, usable: int, settings: dict,
                num_samples: Optional[int] = None) -> bool:
    peak = _peak(rec, row, settings, num_samples)
    return row["fits"] and (peak is None or peak[0] <= usable)


def recipes_advice(plan: dict, model_args: str, hw_args: str) -> List[Dict[str, Any]]:
    """Shipped recipes on this model and hardware, best first (`rank`): fits as is, or the
    override that fits; each with its quantize time (its own calibration rows), whether it was
    made for this model (`for_model`) and then the Δppl it promises, and the hub inputs it
    reads."""
    out = [_advise(plan, rec, model_args, hw_args) for rec in shipped_recipes()]
    # Hub inputs rank last where the hub is off, or for a model on disk (likely offline).
    hub_last = hub_off() is not None or plan["model"]["source"] != "hub"
    out.sort(key=lambda r: (0 if r["fits"] and not r["near_miss"] else 1 if r["fits"] else 2,
                            hub_last and bool(r["hub_inputs"]), not r["for_model"],
                            r["expected_delta_ppl"] is None, r["expected_delta_ppl"] or 0,
                            -r["margin_bytes"], r["recipe"]))
    for i, r in enumerate(out, 1):
        r["rank"] = i
    return out


def _advise(plan: dict, rec: dict, model_args: str, hw_args: str) -> Dict[str, Any]:
    """One recipe: fits as is, or the override that fits (group size, bits, rows, offload)."""
    rows, usable, st = plan["rows"], plan["hardware"]["usable_bytes"], plan["settings"]
    hidden, inter = plan["model"]["hidden"], plan["model"]["intermediate"]
    fmt, extra, note, samples = rec["format"], [], "", rec["num_samples"]
    g = rec["group_size"]
    if rec["method"] != "bnb" and g > 0 and (hidden % g or inter % g):
        ok = [x for x in (128, 64, 32) if not (hidden % x or inter % x)]
        extra.append(f"bits.group_size={ok[0] if ok else -1}")
        note = f"group size {g} does not divide the model's widths"
    fits = recipe_fits(rec, rows[fmt], usable, st)
    if not fits and fmt == "w4" and rec["method"] != "awq" and \
            recipe_fits(rec, rows["w3"], usable, st):
        fmt, fits, note = "w3", True, "w4 does not fit; w3 does (measure its quality first)"
        extra.append("bits=w3")
    if not fits:
        samples = _fitting_samples(plan, rec) or samples
        if samples != rec["num_samples"]:
            extra.append(f"calibration.num_samples={samples}")
            fits, note = True, "the calibration activations do not fit; fewer rows do"
    if not fits and plan["hardware"]["device"] == "cuda" and rec["method"] != "bnb":
        peak = _peak(rec, rows[fmt], st)
        if peak is not None and peak[0] <= usable:  # quantizing fits; inference does not
            extra.append(f"hardware.device_map=auto "
                         f"hardware.max_memory.0={int(usable / 2 ** 30)}GiB")
            note = "the quantized model does not fit this GPU: evaluation offloads " \
                   "layers to CPU RAM (slow)"
            fits = True
    cmd = f"python -m qrecipe +recipe={rec['recipe']} {model_args} {hw_args} " + " ".join(extra)
    same = plan["model"]["name"] in (rec["model"], rec["model_path"])
    return {**rec, "fits": fits, "near_miss": bool(extra) and fits,
            "command": " ".join(cmd.split()), "note": note,
            "margin_bytes": rows[fmt]["margin_bytes"], "for_model": same,
            "expected_delta_ppl": rec["expected_delta_ppl"] if same else None,
            **_recipe_time(rec, rows[fmt], st, samples)}


def _recipe_time(rec: dict, row: dict, settings: dict, samples: int) -> Dict[str, Any]:
    """The plan's quantize time of the recipe's method/backend, at the recipe's own calibration
    tokens (the plan's row is at --samples x --seq-len)."""
    q = next((q for q in row["quantize"]
              if q["method"] == rec["method"] and q["backend"] == rec["backend"]), None)
    if q is None or q["seconds"] is None:
        return {"seconds": None, "seconds_range": None}
    scale = samples * rec["seq_len"] / (settings["num_samples"] * settings["seq_len"]) \
        if time_grows_with_rows(rec["method"], rec["backend"]) else 1.0
    span = q.get("seconds_range")
    return {"seconds": round(q["seconds"] * scale, 1),
            "seconds_range": [round(x * scale, 1) for x in span] if span else None}


def _fitting_samples(plan: dict, rec: dict) -> Optional[int]:
    """The largest calibration row count (a power of two) with which quantizing fits."""
    row, usable = plan["rows"][rec["format"]], plan["hardware"]["usable_bytes"]
    n = rec["num_samples"]
    if not row["fits"] or _peak(rec, row, plan["settings"]) is None:
        return None
    while n > 1:
        n //= 2
        if recipe_fits(rec, row, usable, plan["settings"], n):
            return n
    return None


def rank_measured(dirs: List[Path], usable: int) -> List[Dict[str, Any]]:
    """Complete runs under the given dirs, best measured quality first, with whether their
    measured in-memory footprint fits the planned hardware."""
    rows = [run_row(r, str(r)) for r in find_runs(dirs)]
    done = [r for r in rows if r["status"] == "complete" and r["delta_ppl"] is not None]
    for r in done:
        fp = r["footprint_mb"]
        r["fits"] = fp is not None and fp * 2 ** 20 <= usable
    done.sort(key=lambda r: (not r["fits"], r["delta_ppl"], r["footprint_mb"] or 0))
    return done
