"""CPU decode speed of a GPTQ checkpoint per kernel the stack has, against the original model:
which kernel qrecipe's `auto` takes on CPU (qrecipe/kernels/table.py). Prints a table, writes
JSON.

    python benchmarks/cpu_kernels.py --checkpoint RUN/model --fp FP_DIR [--dtype bfloat16]
        [--threads 1] [--windows 2] [--json OUT]

An AVX2-only CPU is simulated on an AVX-512 one with ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 (PyTorch's bfloat16 matmul is then as slow as there; --dtype float32, the
dtype such a job computes in). RUN/model: a saved GPTQ checkpoint (e.g. `make demo`'s run
directory); FP_DIR: the original model as a transformers folder (for the demo: the dequantized
GGUF in the qrecipe cache, ~/.cache/qrecipe/models/<16 hex>). Each variant runs in its own process (a kernel's env and
torch.compile state never leak into the next): load time, decode tokens/s at batch 1 (median
step over a KV cache, qrecipe/evaluation/speed.py), prefill tokens/s, memory footprint, and
perplexity on the first `--windows` 512-token windows of the shipped WikiText-2 text, which must
match the torch kernel's (the logits a kernel gives; the dense kernel's, which are the same to the
bit, where the torch kernel fails) within --tolerance (relative): the rule qrecipe's `auto` on
CPU follows (the fastest kernel within 0.5%).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what makes PyTorch run as on an AVX2-only CPU (recorded with the results when set)
_SIMULATE = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
sys.path.insert(0, str(ROOT))

# name -> (transformers GPTQConfig backend, environment, dense at load)
VARIANTS = {
    "fp": (None, {}, False),
    "torch": ("torch", {}, False),
    "torch (GPTQ_TORCH_CACHE_WEIGHTS=1)": ("torch", {"GPTQ_TORCH_CACHE_WEIGHTS": "1"}, False),
    "torch_fused": ("torch_fused", {}, False),
    "torch_aten": ("gptq_torch_aten", {}, False),
    "torch_int8": ("torch_int8", {}, False),
    "dequantized": ("torch", {}, True),
}


def _one(name: str, a) -> dict:
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPTQConfig

    from qrecipe.evaluation.perplexity import perplexity
    from qrecipe.evaluation.speed import measure
    from qrecipe.kernels.dense import dequantize_linears
    from qrecipe.kernels.table import loaded_kernels

    backend, _, dense = VARIANTS[name]
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    t0 = time.perf_counter()
    if backend is None:
        model = AutoModelForCausalLM.from_pretrained(a.fp, dtype=dtype, device_map="cpu")
    else:
        model = AutoModelForCausalLM.from_pretrained(
            a.checkpoint, dtype=dtype, device_map="cpu",
            quantization_config=GPTQConfig(bits=a.bits, backend=backend))
        if dense:
            dequantize_linears(model, dtype)
    load_s = time.perf_counter() - t0
    tok = AutoTokenizer.from_pretrained(a.checkpoint)
    text = (ROOT / "qrecipe" / "texts" / "wikitext2_raw_test.txt").read_text()[:200_000]
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
    ev = OmegaConf.create({"seq_len": 512, "stride": 512, "max_windows": a.windows,
                           "batch_size": 1})
    ppl = perplexity(model, ids, ev, name)
    speed = measure(model, ids, 128, a.new_tokens, repeats=a.repeats)
    return {"variant": name, "load_s": round(load_s, 2), "ppl": ppl["ppl"],
            "ppl_seconds": round(ppl["seconds"], 2),
            "decode_tokens_per_s": speed["decode_tokens_per_s"],
            "prefill_tokens_per_s": speed["prefill_tokens_per_s"],
            "footprint_bytes": int(model.get_memory_footprint()),
            "modules": loaded_kernels(model)}


def _run(name: str, a) -> dict:
    env = dict(os.environ, **VARIANTS[name][1])
    args = [sys.executable, __file__, "--one", name, "--checkpoint", a.checkpoint, "--fp", a.fp,
            "--dtype", a.dtype, "--threads", str(a.threads), "--windows", str(a.windows),
            "--bits", str(a.bits), "--new-tokens", str(a.new_tokens),
            "--repeats", str(a.repeats)]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600)
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"variant": name, "error": tail[0][:200]}


def _table(rows, ref_ppl: float, fp_speed: float, tol: float) -> list:
    out = ["| variant | decode tok/s | vs fp | prefill tok/s | ppl (2 windows) | ppl as torch's "
           "| footprint MB | load s | layers |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['variant']} | failed: {r['error']} |||||||")
            continue
        rel = (r["ppl"] - ref_ppl) / ref_ppl
        same = ("yes" if rel == 0 else f"yes ({rel:+.2%})") if abs(rel) <= tol else \
            f"no ({rel:+.2%})"
        out.append(f"| {r['variant']} | {r['decode_tokens_per_s']:.1f} | "
                   f"{r['decode_tokens_per_s'] / fp_speed:.2f}x | "
                   f"{r['prefill_tokens_per_s']:.0f} | {r['ppl']:.4f} | "
                   f"{'(fp)' if r['variant'] == 'fp' else same} | "
                   f"{r['footprint_bytes'] / 2**20:.1f} | {r['load_s']:.1f} | "
                   f"{', '.join(f'{k} {v}' for k, v in r['modules'].items()) or 'dense'} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--fp")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--bits", type=int, default=4)
    # one thread: on a shared machine another process makes OpenMP threads spin (10x swings)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.005,
                    help="relative ppl difference to the torch kernel allowed")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--one")
    ap.add_argument("--json")
    ap.add_argument("--table", help="print the table of an earlier --json file, run nothing")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(_one(a.one, a)))
        return
    if a.table:
        doc = json.loads(Path(a.table).read_text())
        _print(doc, doc["rows"], doc["tolerance_ppl"])
        return
    if not (a.checkpoint and a.fp):
        ap.error("--checkpoint and --fp are required (or --table FILE)")
    import torch
    rows = [_run(n, a) for n in a.variants.split(",")]
    doc = {"date": datetime.date.today().isoformat(), "machine": platform.node(),
           "cpu": _cpu_name(), "cores": os.cpu_count(), "threads": a.threads,
           "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
           "dtype": a.dtype, "checkpoint": a.checkpoint, "command": " ".join(sys.argv),
           "env": {k: os.environ[k] for k in _SIMULATE if k in os.environ},
           "tolerance_ppl": a.tolerance, "rows": rows}
    _print(doc, rows, a.tolerance)
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")


def _print(doc: dict, rows: list, tol: float) -> None:
    ok = {r["variant"]: r for r in rows if "error" not in r}
    ref = next(ok[n]["ppl"] for n in ("torch", "dequantized", "fp") if n in ok)
    fp_speed = ok["fp"]["decode_tokens_per_s"] if "fp" in ok else float("nan")
    print(f"{doc['date']}, {doc['cpu']}, {doc['cores']} cores, {doc['threads']} thread(s), "
          f"capability {doc['capability']}, torch {doc['torch']}, {doc['dtype']}")
    print("\n".join(_table(rows, ref, fp_speed, tol)))


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
