"""Seconds qrecipe spends on the quantized weights of a gptqmodel run with layer checkpoints once
the library has written them: the canonical layout, the save stage's sha256 and the manifest's.

before (the code issue 9's overhead work replaced): gptqmodel writes the shard in registration
order, qrecipe rewrites it (safetensors load_file + save_file), then the save stage and the
manifest each read it (the rename to model/ changed its path, so the memo missed).
after: gptqmodel writes the shard in canonical order (qrecipe's hook on its shard writer),
canonicalize() reads only the header, the save stage hashes the file once and the manifest
reuses that digest.
follow: as after, and each shard is hashed while gptqmodel writes it (filehash.Follower), so the
save stage reads nothing; what is left is the wait for the hashing once the write ends.
sharded: as follow, in shards of at most backends.base.SHARD_BYTES (what the adapter asks
gptqmodel for), each hashed on its own thread while the next one is written.

The shard goes through gptqmodel 7.6's own writer (streaming_state_dict_to_shards) with the
tensors of a GPTQ 4-bit Llama-2-7B (int32 qweight/qzeros/g_idx, fp16 scales, fp16 embedding and
head: 3.9 GB), filled with constants (the bytes are never looked at). The library's write is timed
apart and is not qrecipe's.

    PYTHONPATH=. python benchmarks/save_overhead.py WORK_DIR [--layers 32] [--repeat N]
        [--rows before,after,follow,sharded] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
from pathlib import Path

HIDDEN, INTER, VOCAB, GROUP = 4096, 11008, 32000, 128
LINEARS = [("self_attn.q_proj", HIDDEN, HIDDEN), ("self_attn.k_proj", HIDDEN, HIDDEN),
           ("self_attn.v_proj", HIDDEN, HIDDEN), ("self_attn.o_proj", HIDDEN, HIDDEN),
           ("mlp.gate_proj", HIDDEN, INTER), ("mlp.up_proj", HIDDEN, INTER),
           ("mlp.down_proj", INTER, HIDDEN)]


def state_dict(layers: int):
    """{name: gptqmodel TensorSource} in the order a Llama registers its modules."""
    import torch
    from gptqmodel.utils.model import TensorSource

    i32, f16 = torch.int32, torch.float16
    shapes = [("model.embed_tokens.weight", f16, (VOCAB, HIDDEN))]
    for i in range(layers):
        for name, fin, fout in LINEARS:
            p = f"model.layers.{i}.{name}"
            shapes += [(f"{p}.g_idx", i32, (fin,)), (f"{p}.qweight", i32, (fin // 8, fout)),
                       (f"{p}.qzeros", i32, (fin // GROUP, fout // 8)),
                       (f"{p}.scales", f16, (fin // GROUP, fout))]
        shapes += [(f"model.layers.{i}.input_layernorm.weight", f16, (HIDDEN,)),
                   (f"model.layers.{i}.post_attention_layernorm.weight", f16, (HIDDEN,))]
    shapes += [("model.norm.weight", f16, (HIDDEN,)), ("lm_head.weight", f16, (VOCAB, HIDDEN))]
    return {n: TensorSource(n, dt, shape, torch.full(shape, k % 7, dtype=dt))
            for k, (n, dt, shape) in enumerate(shapes)}


def gptqmodel_write(sd, out: Path, canonical: bool, phases: dict, shard_bytes=None):
    """gptqmodel's write (the library's seconds); with a file-hash memo active, the shards are
    hashed while written and the wait for that hashing after the write is qrecipe's."""
    from gptqmodel.utils.model import streaming_state_dict_to_shards

    from qrecipe.backends.gptqmodel.shards import shard_writes
    with shard_writes(canonical) as hashes:
        t = time.perf_counter()
        streaming_state_dict_to_shards(dict(sd), save_dir=str(out), model_base_name="model",
                                       single_file_name="model.safetensors",
                                       metadata={"format": "pt"}, max_shard_size=shard_bytes)
        library = time.perf_counter() - t
    t = time.perf_counter()
    if hashes.wait():
        _lap(phases, "sha256 wait after the write", t)
    return round(library, 2)


def _lap(phases: dict, name: str, t0: float) -> float:
    now = time.perf_counter()
    phases[name] = round(now - t0, 2)
    return now


def before(d: Path, phases: dict) -> str:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from qrecipe.record.fingerprint import _sha256_read
    t = time.perf_counter()
    for f in sorted(d.glob("*.safetensors")):  # gptqmodel_backend._canonical_safetensors
        with safe_open(str(f), "pt") as h:
            meta = h.metadata()
        tmp = f.with_name(f".tmp-{f.name}")
        save_file(load_file(str(f)), str(tmp), metadata=meta)
        os.replace(tmp, f)
    t = _lap(phases, "canonical layout", t)
    _sha256_read(d / "model.safetensors")
    t = _lap(phases, "save stage sha256", t)
    digest = _sha256_read(d / "model.safetensors")
    _lap(phases, "manifest sha256", t)
    return digest


def after(d: Path, memo: Path, phases: dict) -> str:
    from qrecipe.record import filehash
    from qrecipe.record.canonical import canonicalize
    from qrecipe.record.fingerprint import sha256_file
    from qrecipe.run.stages import weights_sha256
    with filehash.memo(memo) if not filehash.active() else contextlib.nullcontext():
        t = time.perf_counter()
        canonicalize(d)
        t = _lap(phases, "canonical layout", t)
        weights_sha256(d)
        t = _lap(phases, "save stage sha256", t)
        moved = d.with_name("model")
        d.rename(moved)
        digest = ",".join(sha256_file(f) for f in sorted(moved.glob("*.safetensors")))
        _lap(phases, "manifest sha256", t)
        moved.rename(d)
    return digest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--rows", default="before,after,follow,sharded",
                    help="which of before, after, follow, sharded (comma-separated)")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    sd = state_dict(a.layers)
    rows = []
    from qrecipe.backends.base import SHARD_BYTES
    from qrecipe.record import filehash
    for what in a.rows.split(",") * a.repeat:
        d = work / "model.partial"
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(work / "memo", ignore_errors=True)
        d.mkdir()
        os.sync()
        phases: dict = {}
        # follow: the memo is active while gptqmodel writes (as in a qrecipe run), so each shard
        # is hashed right behind the writer
        with filehash.memo(work / "memo") if what in ("follow", "sharded") \
                else contextlib.nullcontext():
            library = gptqmodel_write(sd, d, what != "before", phases,
                                      SHARD_BYTES if what == "sharded" else None)
            t0 = time.perf_counter()
            digest = before(d, phases) if what == "before" else after(d, work / "memo", phases)
            own = time.perf_counter() - t0 + phases.get("sha256 wait after the write", 0)
        rows.append({"what": what, "qrecipe_s": round(own, 2),
                     "phases": phases, "gptqmodel_write_s": library, "sha256": digest,
                     "files": len(list(d.glob("*.safetensors"))),
                     "bytes": sum(f.stat().st_size for f in d.glob("*.safetensors"))})
        shutil.rmtree(d)
    for layout in ({r["sha256"] for r in rows if r["what"] == "sharded"},
                   {r["sha256"] for r in rows if r["what"] != "sharded"}):
        assert len(layout) <= 1, "the canonical bytes changed"
    print(f"{rows[0]['bytes'] / 1e9:.2f} GB of weights ({a.layers} layers); the same sha256 in "
          f"every row of a layout ({rows[0]['sha256'][:16]}; sharded: {rows[-1]['files']} files)")
    for r in rows:
        print(f"{r['what']:<7} qrecipe {r['qrecipe_s']:6.2f} s  {r['phases']}  "
              f"(gptqmodel's write {r['gptqmodel_write_s']:.2f} s)")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
