"""Ratios and tables of a benchmarks/gpu_bench.py JSON (also: python gpu_bench_table.py FILE.json
[FILE.json ...] prints the tables of saved runs).

Definitions (per row):
- per layer s: mean of the per-layer times the library's own layer events give (qrecipe's layer log
  observes them in both runners): from the first layer's forward to each layer's completion.
- lib s: the backend library's own calls, load + quantize + save, timed around those calls.
- own s: the job's process time (interpreter start to exit) minus lib s: imports, data, and for
  qrecipe its validation, fingerprints, locks and reports.
- imports s: the library imports both runners pay, timed in each process: torch with the CUDA
  start, and the backend's package (with transformers). Their time varies by seconds from one
  process to the next (file cache, host), more than qrecipe adds, so the overhead subtracts them.
- qrecipe overhead: (own s - imports s) of the qrecipe job minus the same of the backend-default
  script on the same method and backend: what qrecipe adds over calling the library directly
  (its config composition and imports, validation, hashing waited for, records, and the
  processes' start and exit). Runs from before the imports were timed use own s alone.
- qrecipe overhead share of the job: the overhead over the qrecipe job's process time (projected
  to 32 layers from a shorter model by its mean per-layer time); of the library's
  load+quantize+save: over the library's own calls alone (stricter: no imports, no start).
- qrecipe overhead share, metrics.json: the job's own split of its wall time (qrecipe/telemetry/overhead.py).
- cold: what a first run on a fresh machine pays on top: the process time plus the one-time JIT
  builds of the extensions that job uses (each built once, in a prebuild process, and timed).
- the cold job (method "cold", runner "cli"): a whole CLI job with its evaluation, kernels
  prebuilt (gpu_bench.py COLD_DOC); its process s is the command's wall.
- goals: each of the GPU goals (GOALS) on this run's rows; "met" only at 32 layers.
- prefill ppl vs reference kernel: exp of a kernel's mean NLL on a few calibration rows less the
  same checkpoint's reference kernel's (REFERENCE_KERNELS), minus 1: whether the kernels agree.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_bench_jobs import NO_GEMM  # noqa: E402

# gptqmodel JIT extensions each job builds on a fresh machine (gptqmodel 7.6 sources; the packer
# is the C++ one of pack_impl="cpu", its default; qrecipe packs on the GPU in torch)
BUILDS = {("gptq", "gptqmodel", "backend_default"): ("gptq_block", "pack_block_cpu"),
          ("gptq", "gptqmodel", "qrecipe"): ("gptq_block",),
          ("rtn", "gptqmodel", "qrecipe"): (),
          ("awq", "gptqmodel", "backend_default"): ("awq",),
          ("awq", "gptqmodel", "qrecipe"): ()}


def lib_total(r) -> float:
    return sum(v for k, v in (r.get("lib_s") or {}).items() if k in ("load", "quantize", "save"))


def per_layer(r):
    pl = r.get("per_layer") or []
    return sum(pl) / len(pl) if pl else None


def derive(doc) -> None:
    builds = {b["ext"]: b.get("build_s") for b in doc.get("prebuild", []) if b.get("ok")}
    for r in doc["rows"]:
        if "error" in r:
            continue
        r["per_layer_s"] = per_layer(r)
        if r.get("lib_s") and "process_s" in r:
            r["own_s"] = r["process_s"] - lib_total(r)
            if r.get("imports_s"):
                r["own_less_imports_s"] = r["own_s"] - sum(r["imports_s"].values())
        need = BUILDS.get((r["method"], r["backend"], r["runner"]), ())
        if need and all(builds.get(e) for e in need):
            r["cold_process_s"] = r["process_s"] + sum(builds[e] for e in need)
            r["cold_builds"] = {e: round(builds[e], 1) for e in need}
    doc["ratios"] = ratios(doc)


def _find(rows, method, backend, runner):
    return next((r for r in rows if (r["method"], r["backend"], r["runner"]) ==
                 (method, backend, runner) and "error" not in r), None)


def ratios(doc) -> dict:
    rows, out = [r for r in doc["rows"] if r["runner"] != "cli"], {}
    layers = doc["shape"]["layers"]
    for method, backend in sorted({(r["method"], r["backend"]) for r in rows}):
        q, d = _find(rows, method, backend, "qrecipe"), _find(rows, method, backend,
                                                              "backend_default")
        if not (q and d):
            continue
        key = f"{method}/{backend}"
        if q.get("per_layer_s") and d.get("per_layer_s"):
            out[f"{key}: per layer, qrecipe / default"] = round(q["per_layer_s"] /
                                                                d["per_layer_s"], 3)
        out[f"{key}: process, qrecipe / default"] = round(q["process_s"] / d["process_s"], 3)
        if q.get("cold_process_s") and d.get("cold_process_s"):
            out[f"{key}: cold process, qrecipe / default"] = round(
                q["cold_process_s"] / d["cold_process_s"], 3)
        own = "own_less_imports_s" if "own_less_imports_s" in q and "own_less_imports_s" in d \
            else "own_s"
        if own in q and own in d:
            added = q[own] - d[own]
            what = "own s less imports" if own != "own_s" else "own s"
            out[f"{key}: qrecipe overhead s ({what}, qrecipe - default)"] = round(added, 1)
            if q.get("per_layer_s"):
                # the same job with 32 layers: it grows by a layer's time per layer
                grow = (32 - layers) * q["per_layer_s"]
                tag = "32 layers" + (" (projected)" if layers != 32 else "")
                out[f"{key}: qrecipe overhead share of the job, {tag}"] = round(
                    max(added, 0) / (q["process_s"] + grow), 3)
                out[f"{key}: qrecipe overhead share of the library's load+quantize+save, "
                    f"{tag}"] = round(max(added, 0) / (lib_total(q) + grow), 3)
        share = (q.get("qrecipe_overhead") or {}).get("qrecipe_own_share")
        if share is not None:
            out[f"{key}: qrecipe overhead share, metrics.json ({layers} layers)"] = share
    for backend in ("gptqmodel", "llmcompressor"):  # the goal: AWQ, 32 layers, < 10 min
        awq = _find(rows, "awq", backend, "qrecipe")
        if awq and awq.get("per_layer_s"):
            out[f"awq/{backend}: qrecipe, 32 layers, minutes (projected)"] = round(
                (awq["process_s"] + (32 - layers) * awq["per_layer_s"]) / 60, 1)
    fp = next((s for s in doc.get("speed", []) if s["kernel"] == "fp16" and "b1" in s), None)
    if fp:
        for s in doc["speed"]:
            if s["kernel"] != "fp16" and "b1" in s:
                for b in ("b1", "b8"):
                    out[f"{s['method']}/{s['kernel']}/{b}: decode vs fp16"] = round(
                        s[b]["decode_tokens_per_s"] / fp[b]["decode_tokens_per_s"], 3)
        if fp.get("weights_bytes"):
            # bandwidth bound: every weight byte read once per token at the card's copy rate
            bound_ms = fp["weights_bytes"] / copy_rate(doc.get("device", "")) * 1000
            doc["fp16_bound_ms_per_token"] = bound_ms
            out["fp16/b1: ms per token over the bandwidth bound"] = round(
                fp["b1"]["decode_ms_per_step"] / bound_ms, 2)
    return out


# Sustained device-to-device copy rate, bytes/s, by card: H100 SXM ~3.0 TB/s (an assumed
# figure, not measured here); H200 4.3 TB/s (8.6 GB copied in 2.0 ms
# through PyTorch, as the device tool's KINDS.md records it; not re-measured here).
COPY_RATE = {"H200": 4.3e12, "H100": 3.0e12}


def copy_rate(device: str) -> float:
    return next((v for k, v in COPY_RATE.items() if k in device), COPY_RATE["H100"])


def _f(v, fmt="{:.2f}"):
    return "" if v is None else fmt.format(v)


def decode_floor(speed: list) -> dict:
    """Where a batch-1 decode step's time goes: fp16's step, the step without its decoder
    layers' GEMMs (gpu_bench_jobs.NO_GEMM: the floor no weight format removes), and per quantized
    row its GEMMs' share. A row's ceiling: fp16's step over (floor + fp16's GEMM time scaled by
    the row's GEMM weight bytes), the speed its format reaches at fp16's GEMM bandwidth."""
    sp = {(s["method"], s["kernel"]): s for s in speed if "b1" in s}
    fp, free = sp.get(("fp16", "fp16")), sp.get(("fp16", NO_GEMM))
    if not fp or not free:
        return {}
    ms = {k: 1000 / s["b1"]["decode_tokens_per_s"] for k, s in sp.items()}
    fp_ms, floor_ms = ms[("fp16", "fp16")], ms[("fp16", NO_GEMM)]
    gemm_ms = fp_ms - floor_ms
    dense, kept = fp.get("weights_bytes"), free.get("weights_bytes")
    out = {"fp16_step_ms": round(fp_ms, 3), "floor_step_ms": round(floor_ms, 3),
           "floor_decode_path": free["b1"].get("decode_path"),
           "fp16_gemm_ms": round(gemm_ms, 3), "rows": {}}
    for (method, kernel), s in sp.items():
        if method == "fp16":
            continue
        q_bytes = s.get("weights_bytes")
        row = {"step_ms": round(ms[(method, kernel)], 3),
               "gemm_ms": round(ms[(method, kernel)] - floor_ms, 3)}
        if dense and kept and q_bytes and dense > kept:
            # the GEMM weights alone: the total less what the floor model keeps (embeddings,
            # norms, lm_head)
            ratio = (q_bytes - kept) / (dense - kept)
            row["gemm_bytes_vs_fp16"] = round(ratio, 3)
            row["ceiling_vs_fp16"] = round(fp_ms / (floor_ms + gemm_ms * ratio), 3)
        out["rows"][f"{method}/{kernel}"] = row
    return out


def floor_lines(doc) -> list:
    """The decode floor as a markdown table (empty without a no-GEMM measurement)."""
    f = decode_floor(doc.get("speed", []))
    if not f:
        return []
    lines = ["", f"fp16 step {f['fp16_step_ms']:.2f} ms at batch 1: GEMMs "
             f"{f['fp16_gemm_ms']:.2f} ms, the rest (floor, {f['floor_decode_path']}) "
             f"{f['floor_step_ms']:.2f} ms", "",
             "| checkpoint/kernel | step ms | GEMMs ms | GEMM bytes / fp16's | ceiling vs fp16 |",
             "|---|---|---|---|---|"]
    lines += [f"| {k} | {r['step_ms']:.2f} | {r['gemm_ms']:.2f} | "
              f"{_f(r.get('gemm_bytes_vs_fp16'), '{:.3f}')} | "
              f"{_f(r.get('ceiling_vs_fp16'), '{:.2f}')} |" for k, r in f["rows"].items()]
    return lines


def markdown(doc) -> str:
    head = ("| method | backend | runner | per layer s | lib s (load/quantize/save) | process s "
            "| own s (of it imports) | cold process s (builds) | peak GPU GiB | disk MB "
            "| reload + generate | kernel |")
    lines = [head, "|" + "---|" * 12]
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['backend']} | {r['runner']} | failed: "
                         f"{r['error']} | | | | | | | | |")
            continue
        lib = r.get("lib_s") or {}
        libs = "/".join(_f(lib.get(k), "{:.1f}") for k in ("load", "quantize", "save")) \
            if lib else ""
        own = _f(r.get("own_s"), "{:.1f}")
        if r.get("imports_s"):
            own += f" ({sum(r['imports_s'].values()):.1f})"
        cold = _f(r.get("cold_process_s"), "{:.1f}")
        if r.get("cold_builds"):
            cold += " (" + ", ".join(f"{k} {v}" for k, v in r["cold_builds"].items()) + ")"
        lines.append(
            f"| {r['method']} | {r['backend']} | {r['runner']} | {_f(r.get('per_layer_s'))} | "
            f"{libs} | {_f(r.get('process_s'), '{:.1f}')} | {own} | "
            f"{cold} | {_f(_scaled(r, 'peak_gpu_bytes', 2**30))} | "
            f"{_f(_scaled(r, 'disk_bytes', 1e6), '{:.0f}')} | {r.get('reload', '')} | "
            f"{r.get('kernel', '')} |")
    lines += ["", ("| checkpoint | kernel | layers loaded as | load s | b1 prefill tok/s | "
                   "b1 decode tok/s | b8 prefill tok/s | b8 decode tok/s | prefill ppl vs "
                   "reference kernel |"), "|" + "---|" * 9]
    gaps = ppl_gaps(doc.get("speed", []))
    for s in doc.get("speed", []):
        if "b1" not in s:
            lines.append(f"| {s['method']} | {s['kernel']} | failed: {s.get('error')} "
                         "| | | | | | |")
            continue
        mods = ", ".join(f"{k} x{v}" for k, v in (s.get("loaded_modules") or {}).items())
        if s.get("linear_weight_dtypes"):  # after a forward: FP8 kept, or decompressed
            mods += " (weights " + ", ".join(
                f"{k} x{v}" for k, v in s["linear_weight_dtypes"].items()) + ")"
        cells = [f"{s[b][k]:,.0f}" + (f" ({s[b]['decode_path']})" if k.startswith("decode")
                                      else "")
                 for b in ("b1", "b8") for k in ("prefill_tokens_per_s", "decode_tokens_per_s")]
        gap = gaps.get((s["method"], s["kernel"]))
        lines.append(f"| {s['method']} | {s['kernel']} | {mods} | {s['load_s']:.1f} | "
                     + " | ".join(cells) + " | "
                     + ("" if gap is None else f"{gap[1]:+.3%} ({gap[0]})") + " |")
    lines += floor_lines(doc)
    lines += ["", *summary(doc)]
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in doc.get("ratios", {}).items()]
    lines += ["", "| goal | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {g} | {_f(v, '{:.3g}')} | {t} | {m} |" for g, v, t, m in goals(doc)]
    return "\n".join(lines)


# The GPU goals on the 32-layer 7B shape, 128 x 512 rows: (what, bound, at most?)
GOALS = {"awq_quantize_s": ("AWQ via llm-compressor: quantize s of the 32 layers", 120, True),
         "gptq_per_layer": ("GPTQ via gptqmodel: per layer, qrecipe / GPTQModel's defaults",
                            0.35, True),
         "cold_wall_s": ("the cold GPTQ job: wall s, kernels prebuilt", 60, True),
         "decode_b1": ("decode at batch 1 / fp16, the kernel `auto` picks", 2.5, False),
         "decode_ceiling": ("its ceiling on this stack: fp16's step / (the step without GEMMs "
                            "+ fp16's GEMM time x the 4-bit GEMM bytes)", 2.5, False),
         "own_share": ("qrecipe's own share of the job (metrics.json)", 0.03, True)}


def goals(doc) -> list:
    """(goal, measured, target, met) per goal and job, from the derived rows and the speed step."""
    rows, out = doc["rows"], []
    at32 = doc["shape"]["layers"] == 32

    def add(key, value, who=""):
        what, bound, most = GOALS[key]
        ok = None if value is None else (value <= bound if most else value >= bound)
        met = "" if ok is None else ("yes" if ok else "no") if at32 else \
            f"n/a ({doc['shape']['layers']} layers)"
        out.append((what + (f" ({who})" if who else ""), value,
                    ("<= " if most else ">= ") + str(bound), met))
    awq = _find(rows, "awq", "llmcompressor", "qrecipe")
    if awq:
        add("awq_quantize_s", (awq.get("lib_s") or {}).get("quantize"))
    key = "gptq/gptqmodel: per layer, qrecipe / default"
    if key in doc.get("ratios", {}):
        add("gptq_per_layer", doc["ratios"][key])
    cold = _find(rows, "cold", "gptqmodel", "cli")
    if cold:
        add("cold_wall_s", cold.get("process_s"))
    fp = next((s for s in doc.get("speed", []) if s["kernel"] == "fp16" and "b1" in s), None)
    ceilings = decode_floor(doc.get("speed", [])).get("rows", {})
    for r in rows:
        if r["runner"] == "qrecipe" and "error" not in r and fp and r.get("kernel"):
            s = next((s for s in doc["speed"] if s["method"] == ckpt_label(r["method"],
                     r["backend"]) and s["kernel"] == r["kernel"] and "b1" in s), None)
            if s:
                who = f"{ckpt_label(r['method'], r['backend'])} on {r['kernel']}"
                add("decode_b1", s["b1"]["decode_tokens_per_s"] / fp["b1"]["decode_tokens_per_s"],
                    who)
                row = ceilings.get(f"{s['method']}/{s['kernel']}", {})
                if "ceiling_vs_fp16" in row:
                    add("decode_ceiling", row["ceiling_vs_fp16"], who)
    for r in rows:
        share = (r.get("qrecipe_overhead") or r.get("overhead") or {}).get("qrecipe_own_share")
        if r["runner"] in ("qrecipe", "cli") and share is not None:
            add("own_share", share, f"{r['method']}-{r['backend']}-{r['runner']}")
    return out


# The kernels a checkpoint's others are compared with, first present wins: each multiplies by the
# checkpoint's weights dequantized into the model's dtype, in PyTorch's GEMMs (float32 sums)
REFERENCE_KERNELS = ("dequantized", "torch", "compressed", "emulated")


def ppl_gaps(speed) -> dict:
    """(checkpoint, kernel) -> (reference kernel, exp(NLL - reference NLL) - 1): how far a
    kernel's prefill perplexity on the benchmark's rows lies from the checkpoint's reference
    kernel (gpu_bench_jobs.prefill_nll). Entries without an NLL (older runs) are left out."""
    nll = {(s["method"], s["kernel"]): s["nll"] for s in speed if s.get("nll") is not None}
    out = {}
    for (method, kernel), v in nll.items():
        ref = next((k for k in REFERENCE_KERNELS if (method, k) in nll), None)
        if ref is not None and ref != kernel:
            out[(method, kernel)] = (ref, math.exp(v - nll[(method, ref)]) - 1)
    return out


def _scaled(r, key: str, unit: float):
    """r[key] in `unit`s, None where the row has no such measurement (the cold job's)."""
    return r[key] / unit if key in r else None


def ckpt_label(method: str, backend: str) -> str:
    """A checkpoint's name in the speed table: the method, `-llmc` where llm-compressor wrote it."""
    return method if backend != "llmcompressor" else f"{method}-llmc"


def _decode(s, fp, b: str) -> str:
    """A speed entry's decode tok/s at batch b, with its ratio to fp16's."""
    if b not in s:
        return ""
    tok = s[b]["decode_tokens_per_s"]
    ratio = f" ({tok / fp[b]['decode_tokens_per_s']:.2f}x)" if fp and b in fp else ""
    return f"{tok:,.0f}{ratio}"


def _pair(q, d, key, fmt="{:.1f}") -> str:
    """qrecipe's value / the default's ("failed" for a failed job, blank for one not run)."""
    cells = ["failed" if r is _FAILED else _f(key(r), fmt) if r else "" for r in (q, d)]
    return " / ".join(cells) if any(cells) else ""


_FAILED = {"failed": True}  # a job that ran and failed, in summary's pairs


def _runner_row(rows, method, backend, runner):
    """The runner's row of a method and backend, _FAILED where it failed, None where not run."""
    mine = [r for r in rows if (r["method"], r["backend"], r["runner"]) ==
            (method, backend, runner)]
    return _find(rows, method, backend, runner) or (_FAILED if mine else None)


def summary(doc) -> list:
    """One line per method and backend, then one per further kernel of its checkpoint: qrecipe
    against the library's defaults (process s, per-layer s, lib s, disk), and the reload of
    qrecipe's checkpoint with each kernel, decode tok/s against fp16 (x)."""
    lines = [("| method | backend | process s qrecipe / default | qrecipe / default | per layer s "
              "qrecipe / default | lib s qrecipe / default | disk MB qrecipe / default | reload "
              "| kernel | b1 decode tok/s (x fp16) | b8 decode tok/s (x fp16) |"),
             "|" + "---|" * 11]
    speed = doc.get("speed", [])
    fp = next((s for s in speed if s["kernel"] == "fp16" and "b1" in s), None)
    if fp:
        lines.append(f"| fp16 | | | | | | | | fp16 | {_cells(fp, fp)} |")
    for method, backend in dict.fromkeys((r["method"], r["backend"]) for r in doc["rows"]
                                         if r["runner"] != "cli"):
        q, d = (_runner_row(doc["rows"], method, backend, r)
                for r in ("qrecipe", "backend_default"))
        ok = q not in (None, _FAILED) and d not in (None, _FAILED)
        ratio = round(q["process_s"] / d["process_s"], 3) if ok else ""
        kernel = q.get("kernel", "") if q not in (None, _FAILED) else ""
        mine = [s for s in speed if s["method"] == ckpt_label(method, backend)]
        mine.sort(key=lambda s: s["kernel"] != kernel)  # the reload kernel (auto's) first
        reload = q.get("reload", "") if q not in (None, _FAILED) else ""
        lines.append(
            f"| {method} | {backend} | {_pair(q, d, lambda r: r.get('process_s'))} | {ratio} | "
            f"{_pair(q, d, lambda r: r.get('per_layer_s'), '{:.2f}')} | "
            f"{_pair(q, d, lib_total)} | "
            f"{_pair(q, d, lambda r: r.get('disk_bytes', 0) / 1e6, '{:.0f}')} | {reload} | "
            f"{kernel} | {_cells(mine[0], fp) if mine else ' | '} |")
        lines += [f"| | | | | | | | | {s['kernel']} | {_cells(s, fp)} |" for s in mine[1:]]
    return lines


def _cells(s, fp) -> str:
    if "b1" not in s:
        return f"failed: {s.get('error')} | "
    return f"{_decode(s, fp, 'b1')} | {_decode(s, fp, 'b8')}"


if __name__ == "__main__":
    for path in sys.argv[1:]:  # several: each file's tables under its name
        with open(path) as fh:
            d = json.load(fh)
        derive(d)
        print(f"\n## {path}\n" if len(sys.argv) > 2 else "", markdown(d), sep="")
