"""bitsandbytes NF4 decode against fp16, one setting at a time (double quantization, compute
dtype), on Llama-shaped random models of several depths: whether NF4's parity with fp16 in
gpu_bench.py (1 decoder layer, whose fp16 lm_head is most of the bytes) holds on deeper models,
and which method.* settings decide it. Needs a CUDA GPU; prints a table and writes JSON.

    python benchmarks/bnb_decode.py --tokenizer DIR --work /tmp/bnbdec --out bnb_decode.json \
        [--layers 1,8] [--shape llama2-7b] [--variants "fp16|nf4 dq fp16-compute"]
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# name -> (dtype the model loads in, BitsAndBytesConfig kwargs or None for the dense baseline)
VARIANTS = {
    "fp16": ("float16", None),
    "bf16": ("bfloat16", None),
    "nf4 dq bf16-compute (qrecipe's bnb default before `auto`), fp16 model":
        ("float16", dict(bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype="bfloat16")),
    # qrecipe's default (method.compute_dtype: auto) on a float16 model
    "nf4 dq fp16-compute": ("float16", dict(bnb_4bit_use_double_quant=True,
                                            bnb_4bit_compute_dtype="float16")),
    "nf4 no-dq fp16-compute": ("float16", dict(bnb_4bit_use_double_quant=False,
                                               bnb_4bit_compute_dtype="float16")),
    "nf4 dq bf16-compute, bf16 model": ("bfloat16", dict(bnb_4bit_use_double_quant=True,
                                                         bnb_4bit_compute_dtype="bfloat16")),
}


def one(model_dir: Path, dtype: str, bnb, ids) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from qrecipe.evaluation.speed import measure
    kw = {}
    if bnb:
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=bnb["bnb_4bit_use_double_quant"],
            bnb_4bit_compute_dtype=getattr(torch, bnb["bnb_4bit_compute_dtype"]))
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype),
                                             device_map={"": "cuda"}, **kw).eval()
    res = {"weights_bytes": int(m.get_memory_footprint())}
    for b in (1, 8):
        r = measure(m, ids, 128, 32, batch=b, repeats=3)
        res[f"b{b}"] = {k: r.get(k) for k in ("decode_tokens_per_s", "decode_path",
                                               "decode_ms_per_step", "prefill_tokens_per_s")}
    del m
    gc.collect()
    torch.cuda.empty_cache()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--work", default="/tmp/bnbdec")
    ap.add_argument("--out", default="bnb_decode.json")
    ap.add_argument("--shape", default="llama2-7b")
    ap.add_argument("--layers", default="1,8")
    ap.add_argument("--variants", default="", help="'|'-separated VARIANTS names (default: all)")
    a = ap.parse_args()
    chosen = [v for v in a.variants.split("|") if v] or list(VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    import torch
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    ids = torch.tensor(tok("The quick brown fox jumps over the lazy dog. " * 40)["input_ids"])
    doc = {"device": torch.cuda.get_device_name(), "shape": a.shape,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "versions": {p: __import__(p).__version__ for p in ("torch", "transformers",
                                                                "bitsandbytes")},
           "command": " ".join([Path(sys.executable).name] + sys.argv), "runs": []}
    for layers in (int(x) for x in a.layers.split(",")):
        d = Path(a.work) / f"L{layers}"
        if not (d / "config.json").exists():
            subprocess.run([sys.executable, str(HERE / "random_llama.py"), str(d), "--tokenizer",
                            a.tokenizer, "--shape", a.shape, "--layers", str(layers)], check=True)
        for name in chosen:
            dtype, bnb = VARIANTS[name]
            try:
                r = one(d, dtype, bnb, ids)
            except Exception as e:  # recorded; the next variant still runs
                r = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            doc["runs"].append({"layers": layers, "variant": name, **r})
            Path(a.out).write_text(json.dumps(doc, indent=1))
    print(table(doc))


def table(doc) -> str:
    lines = ["| layers | variant | weights MB | b1 decode tok/s | vs fp16 | b8 decode tok/s | "
             "vs fp16 |", "|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        if "error" in r:
            lines.append(f"| {r['layers']} | {r['variant']} | error: {r['error']} |")
            continue
        fp = next(x for x in doc["runs"] if x["layers"] == r["layers"] and x["variant"] == "fp16")
        cells = []
        for b in ("b1", "b8"):
            v = r[b]["decode_tokens_per_s"]
            cells += [f"{v:,.0f} ({r[b]['decode_path']})",
                      f"{v / fp[b]['decode_tokens_per_s']:.3f}"]
        lines.append(f"| {r['layers']} | {r['variant']} | {r['weights_bytes'] / 1e6:,.0f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        print(table(json.loads(Path(sys.argv[1]).read_text())))
    else:
        main()
