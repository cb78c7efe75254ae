"""Seconds qrecipe spends on the sha256 of the weights a transformers `save_pretrained` writes (the
llm-compressor, hqq and bitsandbytes backends save that way), once the write has ended:

after: save_pretrained writes the shards, then the save stage reads each one again to hash it
(the code before qrecipe/backends/hf_patches.py);
follow: each shard is hashed while save_pretrained writes it (hf_patches.hashed_shards, one
filehash.Follower per shard), so what is left after the write is the wait for the followers.

The model: a Llama-2-7B-shaped decoder (benchmarks/random_llama.py's SHAPES) with --layers layers
and its linears in float8_e4m3fn (an FP8 checkpoint's bytes: one a weight), embeddings in
bfloat16, filled with constants (the bytes are never looked at), saved in shards of
--shard-gb. The library's write is timed apart and is not qrecipe's.

    PYTHONPATH=. python benchmarks/hf_save_hash.py WORK_DIR [--layers 8] [--repeat 3]
        [--shard-gb 2] [--rows after,follow] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path


def model(layers: int):
    import torch
    from random_llama import SHAPES
    from transformers import LlamaConfig, LlamaForCausalLM
    hidden, inter, heads, kv = SHAPES["llama2-7b"]
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, vocab_size=32000)
    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    for name, p in list(m.named_parameters()):  # real tensors, constant bytes
        owner, attr = m.get_submodule(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]
        fp8 = p.dim() == 2 and "embed" not in name and "lm_head" not in name
        t = torch.full(p.shape, 0.5, dtype=torch.bfloat16)
        setattr(owner, attr, torch.nn.Parameter(t.to(torch.float8_e4m3fn) if fp8 else t,
                                                requires_grad=False))
    return m


def one(row: str, m, out: Path, shard: str) -> dict:
    from qrecipe.backends import hf_patches
    from qrecipe.record import filehash, fingerprint
    shutil.rmtree(out, ignore_errors=True)
    with filehash.memo(out.parent / "memo"):
        t0 = time.perf_counter()
        if row == "follow":
            took = hf_patches.save_hashed(lambda: m.save_pretrained(str(out),
                                                                    max_shard_size=shard))
            write_s = took["save"]
        else:
            m.save_pretrained(str(out), max_shard_size=shard)
            write_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        for f in sorted(out.glob("*.safetensors")):  # the save stage's hashing
            fingerprint.sha256_file(f)
        own = time.perf_counter() - t1 + (took["shard_sha256_wait"] if row == "follow" else 0)
    files = sorted(out.glob("*.safetensors"))
    return {"row": row, "write_s": round(write_s, 2), "own_s": round(own, 2),
            "files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shard-gb", type=float, default=2.0)
    ap.add_argument("--rows", default="after,follow", help="their order within each repeat")
    ap.add_argument("--json")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    m = model(a.layers)
    shard = f"{int(a.shard_gb * 1000)}MB"
    rows = [one(row, m, work / "out", shard)
            for _ in range(a.repeat) for row in a.rows.split(",")]
    import torch
    import transformers
    doc = {"machine": platform.processor() or platform.machine(), "layers": a.layers,
           "shard": shard, "versions": {"torch": torch.__version__,
                                        "transformers": transformers.__version__},
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    print("| row | write s | qrecipe's hashing s after the write | files | GB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['write_s']} | {r['own_s']} | {r['files']} | "
              f"{r['bytes'] / 1e9:.2f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
