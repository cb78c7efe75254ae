"""Decode speed of every kernel on every kind of 4-bit checkpoint, on one GPU: the measurements
`hardware.kernel=auto` ranks by (qrecipe/kernels/measured.py).

    python benchmarks/kernel_speed.py --tokenizer DIR --work /tmp/ks --out kernel_speed.json \
        [--shape llama2-7b] [--layers 32] [--phase all|checkpoints|speed] [--write-table] \
        [--dtype float16|bfloat16]

Builds a Llama-shaped random fp16 model (benchmarks/random_llama.py: speed only, never quality),
writes one checkpoint per kind qrecipe produces (GPTQ symmetric and asymmetric, compressed-tensors
asymmetric: RTN, since a kernel's speed does not depend on how the integers were chosen; AWQ:
gptqmodel with 4 x 128 calibration tokens), builds the compiled kernels in the background, then
reloads every checkpoint with every kernel that fits it (qrecipe's own check, allow_jit on) and
measures prefill and decode at batch 1 and 8 against the fp16 model (gpu_bench_jobs.job_speed),
every model loaded in --dtype (the fp baseline too; a kernel that computes in float16 casts a
bfloat16 model's activations).
--phase splits the work over two device commands on the same machine (checkpoints, then speed).
--write-table also writes its rows into qrecipe/kernels/measured.json, replacing the rows of the
same GPU and dtype and keeping the others. Prints a markdown table. Each row says how its decode
was timed (`decode_path`: a CUDA graph whose replayed step matched the eager one, or eager).
--exllama-current-stream measures ExLlamaV2 built from a copy of its sources whose kernels launch
on the current stream (benchmarks/exllama_stream.py); not a kernel qrecipe ships, so it writes
no table. --kernels measures a subset, on the checkpoints those kernels fit only; with
--write-table its rows replace only the table's rows of the same GPU, dtype and kernel, and
its source is added beside the others (with the kernels it measured).
The fp16 model is also measured without its decoder layers' GEMMs (`no-gemm`,
gpu_bench_jobs.strip_gemms): the rest of a step, which no weight format removes. The JSON's
`floor` (gpu_bench_table.decode_floor) splits each row's batch-1 step into that floor and its
GEMMs, and gives the ceiling of a 4-bit decode: fp16's step over (floor + fp16's GEMM time
scaled by the weight bytes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from gpu_bench_jobs import DEFAULT_BITS, NO_GEMM  # noqa: E402
from gpu_bench_table import decode_floor  # noqa: E402
from qrecipe.kernels.measured import REFERENCE_DTYPE  # noqa: E402
from gpu_bench import (  # noqa: E402
    KERNEL_BUILD,
    PREBUILD,
    BuildQueue,
    finish_child,
    fits,
    job_env,
    setup,
    start_child,
)

# label -> (method, backend, extra overrides, format, sym)
CHECKPOINTS = {
    "gptq-sym": ("rtn", "gptqmodel", ["method.sym=true"], "gptq", True),
    "gptq-asym": ("rtn", "gptqmodel", ["method.sym=false"], "gptq", False),
    "ct-asym": ("rtn", "llmcompressor", [], "compressed-tensors", False),
    "awq": ("awq", "gptqmodel", [], "awq", None),
}
AWQ_ROWS = (4, 128)  # calibration of the AWQ checkpoint: enough to write one, fast
# every checkpoint's width (gpu_bench_jobs.DEFAULT_BITS, what its qrecipe jobs are given)
BITS = int(dict(o.split("=") for o in DEFAULT_BITS)["bits"].lstrip("w"))


def wanted(only: set) -> list:
    """The checkpoint labels to write: every one, or those a kernel in `only` can run."""
    from qrecipe.kernels import table as kernels
    return [label for label, c in CHECKPOINTS.items()
            if not only or only & {k.name for k in kernels.KERNELS[c[3]]}]


def checkpoints(a, work: Path, model_dir: Path, rows: Path) -> dict:
    made = {}
    for label in wanted(set(filter(None, a.kernels.split(",")))):
        method, backend, extra, fmt, sym = CHECKPOINTS[label]
        out = work / "out" / label
        if (out / "model" / "config.json").exists():
            made[label] = str(out / "model")
            continue
        n, L = AWQ_ROWS if method == "awq" else (a.samples, a.seq_len)
        spec = {"name": label, "method": method, "backend": backend, "runner": "qrecipe",
                "model": str(model_dir), "rows": str(rows), "samples": n, "seq_len": L,
                "layers": a.layers, "qcache": str(work / "qcache"), "out": str(out),
                "overrides": extra}
        proc, t0 = start_child(spec, work, job_env(work))
        r = finish_child(label, proc, t0, work, 560)
        print(f"  {label}: {r.get('process_s', 0):.0f} s {r.get('error', '')}", flush=True)
        if "model_dir" in r:
            made[label] = r["model_dir"]
    return made


def targets(made: dict, model_dir: Path, cc: float, only=None) -> list:
    """fp16, the fp16 model without its GEMMs (the floor of a step), then every kernel that fits
    every checkpoint; `only`: the kernel names to keep (fp16 is always kept)."""
    from qrecipe.kernels import table as kernels
    out = [("fp16", "fp16", str(model_dir)), ("fp16", NO_GEMM, str(model_dir))]
    for label, d in made.items():
        fmt = CHECKPOINTS[label][3]
        out += [(label, k.name, d) for k in kernels.KERNELS[fmt]
                if "cuda" in k.devices and not k.download and fits(fmt, k.name, d, cc)]
    return [t for t in out if not only or t[1] in only or t[1] == "fp16"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--work", default="/tmp/kernel_speed")
    ap.add_argument("--out", default="kernel_speed.json")
    ap.add_argument("--shape", default="llama2-7b")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--phase", choices=("all", "checkpoints", "speed"), default="all")
    ap.add_argument("--write-table", action="store_true")
    ap.add_argument("--dtype", choices=("float16", "bfloat16"), default=REFERENCE_DTYPE,
                    help="the dtype every model is loaded and measured in")
    ap.add_argument("--exllama-current-stream", action="store_true",
                    help="ExLlamaV2 from sources that launch on the current stream")
    ap.add_argument("--kernels", default="",
                    help=f"comma-separated kernels to measure (fp16 always; {NO_GEMM}: fp16 "
                         "without its GEMMs); default: all")
    a = ap.parse_args()
    if a.exllama_current_stream and a.write_table:
        ap.error("--exllama-current-stream measures a build qrecipe does not ship: no table")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir, rows = work / "fp16", work / "rows.pt"
    doc = setup(a, model_dir, rows, work)
    if a.phase != "speed":  # compile in the background while the checkpoints are written
        builds = BuildQueue(work, {**job_env(work), "MAX_JOBS": "12"},
                            tuple(e for e in PREBUILD if e in KERNEL_BUILD.values()))
        made = checkpoints(a, work, model_dir, rows)
        for e in builds.names:
            doc["prebuild"].append({"ext": e, **(builds.wait(e) or {})})
        (work / "checkpoints.json").write_text(json.dumps(made))
        if a.phase == "checkpoints":
            Path(a.out).write_text(json.dumps(doc, indent=1, default=str))
            return
    made = json.loads((work / "checkpoints.json").read_text())
    doc["dtype"] = a.dtype
    doc["kernels"] = sorted(filter(None, a.kernels.split(",")))
    patched = str(work / "exllama_stream") if a.exllama_current_stream else None
    doc["exllama_sources"] = "patched: launches on the current stream" if patched else "gptqmodel's"
    proc, t0 = start_child({"name": "speed", "runner": "speed", "rows": str(rows),
                            "dtype": a.dtype, "exllama_stream": patched,
                            "targets": targets(made, model_dir, doc["device_cc"],
                                               set(filter(None, a.kernels.split(","))))},
                           work, job_env(work))
    r = finish_child("speed", proc, t0, work, 580)
    doc["speed"] = r.get("targets") or json.loads(
        (work / "speed.result.json.partial").read_text() or "[]")
    doc["table"] = table_rows(doc)
    doc["floor"] = decode_floor(doc["speed"])
    Path(a.out).write_text(json.dumps(doc, indent=1, default=str))
    print(markdown(doc["table"]))
    print(json.dumps(doc["floor"], indent=1))
    if a.write_table:
        write_table(doc)


def table_rows(doc: dict) -> list:
    """One row per (checkpoint, kernel): decode tok/s at batch 1 and 8 against fp16's."""
    sp = doc["speed"]
    fp = next((s for s in sp if s["kernel"] == "fp16" and "b1" in s), None)
    rows = []
    for s in sp:
        if s["method"] == "fp16" or "b1" not in s or not fp:
            continue
        _, _, _, fmt, sym = CHECKPOINTS[s["method"]]
        b1, b8 = s["b1"]["decode_tokens_per_s"], s["b8"]["decode_tokens_per_s"]
        rows.append({"gpu": doc["device"], "cc": doc["device_cc"],
                     "dtype": doc.get("dtype", REFERENCE_DTYPE), "format": fmt, "sym": sym,
                     "bits": BITS,
                     "checkpoint": s["method"], "kernel": s["kernel"],
                     "loaded_as": s.get("loaded_modules"),
                     "decode_path": s["b1"].get("decode_path"),
                     "b1_tok_s": round(b1, 1), "b8_tok_s": round(b8, 1),
                     "b1_vs_fp16": round(b1 / fp["b1"]["decode_tokens_per_s"], 3),
                     "b8_vs_fp16": round(b8 / fp["b8"]["decode_tokens_per_s"], 3)})
    return rows


def markdown(rows: list) -> str:
    out = ["| checkpoint | kernel | loaded as | b1 decode tok/s | b1 vs fp16 | b8 decode tok/s "
           "| b8 vs fp16 |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["checkpoint"], -r["b1_vs_fp16"])):
        out.append(f"| {r['checkpoint']} | {r['kernel']} | {r['loaded_as']} | {r['b1_tok_s']:,} "
                   f"| {r['b1_vs_fp16']} | {r['b8_tok_s']:,} | {r['b8_vs_fp16']} |")
    return "\n".join(out)


def write_table(doc: dict) -> None:
    """qrecipe/kernels/measured.json: the rows `auto` ranks by, with what reproduces them."""
    path = HERE.parent / "qrecipe" / "kernels" / "measured.json"
    old = json.loads(path.read_text()) if path.is_file() else {"sources": [], "rows": []}
    path.write_text(json.dumps(merged(old, doc), indent=1) + "\n")
    print(f"wrote {path}")


def merged(old: dict, doc: dict) -> dict:
    """The table with this run's rows in. A run of every kernel replaces the rows and sources of
    its GPU and dtype; a subset (doc["kernels"]) replaces those of its GPU, dtype and kernels
    only (it measured each on every checkpoint it fits). Other GPUs' and dtypes' stay."""
    src = {k: doc[k] for k in ("device", "device_cc", "dtype", "date", "versions", "command",
                               "shape")}
    subset = set(doc.get("kernels") or ())
    if subset:
        src["kernels"] = sorted(subset)

    def replaced(gpu, dtype, kernels) -> bool:
        """Whether this run measured again what (gpu, dtype, kernels) holds; None: every one."""
        if (gpu, dtype or REFERENCE_DTYPE) != (doc["device"], doc["dtype"]):
            return False
        return not subset or (kernels is not None and set(kernels) <= subset)

    rows = [r for r in old.get("rows", []) if not replaced(r["gpu"], r.get("dtype"),
                                                           [r["kernel"]])]
    sources = [s for s in old.get("sources", [])
               if not replaced(s["device"], s.get("dtype"), s.get("kernels"))]
    return {"sources": sources + [src], "rows": rows + doc["table"]}


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t:.0f} s")
