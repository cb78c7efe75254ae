"""Advice for `qrecipe plan`: the decision framework (which method for which goal, and why), the
shipped recipes that fit the planned model and hardware (with the override that makes a near
miss fit), and, given output directories, the measured runs ranked instead of the rules."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from qrecipe.paths import config_dir

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
    if method == "bnb":
        return "nf4" if width == 4 else "int8"
    return f"w{width}"


def shipped_recipes() -> List[Dict[str, Any]]:
    """Each shipped recipe's method, backend, bits and group size, read from its YAML."""
    from omegaconf import OmegaConf

    from qrecipe.paths import recipes_dir

    conf, found = config_dir(), []
    for f in sorted(recipes_dir().glob("*.yaml")):
        r = OmegaConf.to_container(OmegaConf.load(f))
        groups = {}
        for d in r.get("defaults", []):
            for k, v in (d.items() if isinstance(d, dict) else []):
                groups[k.split("/")[-1]] = v
        method = groups.get("method", "gptq")
        mcfg = OmegaConf.load(conf / "method" / f"{method}.yaml")
        bcfg = OmegaConf.load(conf / "bits" / f"{groups.get('bits', 'w4')}.yaml")
        bits = {**OmegaConf.to_container(bcfg), **(r.get("bits") or {})}
        ccfg = OmegaConf.load(conf / "calibration" / f"{groups.get('calibration', 'pydoc')}.yaml")
        cal = {**OmegaConf.to_container(ccfg), **(r.get("calibration") or {})}
        found.append({"recipe": f.stem, "method": method,
                      "backend": (r.get("method") or {}).get("backend", mcfg.backend),
                      "format": recipe_format(method, int(bits["width"])),
                      "group_size": int(bits["group_size"]),
                      "num_samples": int(cal["num_samples"]), "seq_len": int(cal["seq_len"])})
    return found


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
    """Shipped recipes on this model and hardware: fits as is, or the override that fits."""
    rows, usable, st = plan["rows"], plan["hardware"]["usable_bytes"], plan["settings"]
    hidden, inter = plan["model"]["hidden"], plan["model"]["intermediate"]
    out = []
    for rec in shipped_recipes():
        row, extra, note = rows[rec["format"]], [], ""
        g = rec["group_size"]
        if rec["method"] != "bnb" and g > 0 and (hidden % g or inter % g):
            ok = [x for x in (128, 64, 32) if not (hidden % x or inter % x)]
            extra.append(f"bits.group_size={ok[0] if ok else -1}")
            note = f"group size {g} does not divide the model's widths"
        fits = recipe_fits(rec, row, usable, st)
        if not fits and rec["format"] == "w4" and rec["method"] != "awq":
            if recipe_fits(rec, rows["w3"], usable, st):
                extra.append("bits=w3")
                note = "w4 does not fit; w3 does (measure its quality first)"
                fits = True
        if not fits:
            q = _fitting_samples(plan, rec)
            if q:
                extra.append(f"calibration.num_samples={q}")
                note = "the calibration activations do not fit; fewer rows do"
                fits = True
        if not fits and plan["hardware"]["device"] == "cuda" and rec["method"] != "bnb":
            peak = _peak(rec, row, st)
            if peak is not None and peak[0] <= usable:  # quantizing fits; inference does not
                extra.append(f"hardware.device_map=auto "
                             f"hardware.max_memory.0={int(usable / 2 ** 30)}GiB")
                note = "the quantized model does not fit this GPU: evaluation offloads " \
                       "layers to CPU RAM (slow)"
                fits = True
        cmd = f"python -m qrecipe +recipe={rec['recipe']} {model_args} {hw_args} " + " ".join(extra)
        out.append({**rec, "fits": fits, "near_miss": bool(extra) and fits,
                    "command": " ".join(cmd.split()), "note": note})
    return out


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
    from qrecipe.report.runs import find_runs, run_row

    rows = [run_row(r, str(r)) for r in find_runs(dirs)]
    done = [r for r in rows if r["status"] == "complete" and r["delta_ppl"] is not None]
    for r in done:
        fp = r["footprint_mb"]
        r["fits"] = fp is not None and fp * 2 ** 20 <= usable
    done.sort(key=lambda r: (not r["fits"], r["delta_ppl"], r["footprint_mb"] or 0))
    return done
