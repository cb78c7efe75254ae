"""gptqmodel 7.6's per-layer checkpoint store, layer by layer, as gptqmodel's own code runs it
(`upstream`) and with each object hashed once (`qrecipe`: qrecipe/backends/gptqmodel/
ckptstore.py, what a qrecipe run applies). Prints a table, writes JSON.

The store is driven through the calls CheckpointExtension.on_boundary makes after each layer:
the next layer's inputs (rows x seq_len x hidden, float16) are put, every module quantized so
far is put_file'd (the new layer's 7 modules as gptqmodel writes them: qweight, qzeros, scales,
g_idx at --bits/--group-size), the generation is committed and unreachable objects collected.
The bytes are random; their sizes are the shape's. No model and no quantization run: this
times the store alone, the part of a checkpointed layer that grows with the layer count.

    python benchmarks/checkpoint_store.py --shape llama2-13b --layers 40 --rows 128 \\
        --seq-len 2048 --dir /tmp/ckpt_bench --json checkpoint_store.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_llama import SHAPES  # noqa: E402


def module_bytes(shape: str, bits: int, group: int) -> Dict[str, int]:
    """Bytes of each quantized Linear of one decoder layer in the GPTQ format."""
    hidden, inter, heads, kv = SHAPES[shape]
    kv_out = hidden * kv // heads
    dims = {"q_proj": (hidden, hidden), "k_proj": (hidden, kv_out), "v_proj": (hidden, kv_out),
            "o_proj": (hidden, hidden), "gate_proj": (hidden, inter),
            "up_proj": (hidden, inter), "down_proj": (inter, hidden)}
    return {name: i * o * bits // 8 + (i // group) * o * bits // 8 + (i // group) * o * 2 + i * 4
            for name, (i, o) in dims.items()}


class Blobs:
    """Random bytes of a given size, different per call without generating them again."""

    def __init__(self, largest: int):
        self.pool = bytearray(os.urandom(largest))
        self.count = 0

    def take(self, size: int) -> bytes:
        self.count += 1
        self.pool[:8] = self.count.to_bytes(8, "little")
        return bytes(memoryview(self.pool)[:size])


def _layer(store, blobs: Blobs, work: Path, modules: dict, k: int, sizes, inputs: int) -> None:
    for name, size in sizes.items():
        path = work / "offload" / f"model.layers.{k}.{name}" / "module.safetensors"
        path.parent.mkdir(parents=True)
        path.write_bytes(blobs.take(size))
        modules[path.parent.name] = path
    nxt = store.put(blobs.take(inputs))
    refs = {name: store.put_file(p) for name, p in modules.items()}
    store.commit(identity={"bench": 1}, cursor=k + 1, continuation=nxt, artifacts=refs)
    for name, ref in refs.items():  # what gptqmodel's adapter.committed records
        path = store.root / "objects" / ref
        if modules[name] != path:
            modules[name].unlink()
            modules[name] = path
    store.collect()


def run(variant: str, a) -> List[dict]:
    from gptqmodel.looper import checkpoint_store as cs

    from qrecipe.backends.gptqmodel.ckptstore import verify_once
    work = Path(a.dir) / variant
    shutil.rmtree(work, ignore_errors=True)
    sizes = module_bytes(a.shape, a.bits, a.group_size)
    inputs = a.rows * a.seq_len * SHAPES[a.shape][0] * 2
    blobs, modules, rows = Blobs(max(inputs, *sizes.values())), {}, []
    with verify_once(variant == "qrecipe") as checked:
        with cs.CheckpointStore(cs.CheckpointConfig(path=str(work / "ckpt"))) as store:
            store.load({"bench": 1})
            for k in range(a.layers):
                t0, read0 = time.perf_counter(), _read_bytes()
                _layer(store, blobs, work, modules, k, sizes, inputs)
                rows.append({"layer": k, "s": round(time.perf_counter() - t0, 3),
                             "read_gb": round((_read_bytes() - read0) / 1e9, 2)})
                print(f"{variant} layer {k}: {rows[-1]['s']:.2f} s", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    if variant == "qrecipe" and not checked.stats:
        sys.exit("the qrecipe variant did not apply (another gptqmodel than 7.6?)")
    return rows


def _read_bytes() -> int:
    """Bytes this process read through read() calls (/proc/self/io rchar), page cache or not."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="llama2-13b", choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--dir", default="/tmp/ckpt_bench")
    ap.add_argument("--variants", default="qrecipe,upstream")
    ap.add_argument("--json", default="checkpoint_store.json")
    a = ap.parse_args()
    results = {v: run(v, a) for v in a.variants.split(",")}
    _print(results)
    meta = {k: getattr(a, k) for k in ("shape", "layers", "rows", "seq_len", "bits",
                                       "group_size")}
    meta.update(machine=platform.machine(), cpus=os.cpu_count(), python=platform.python_version())
    Path(a.json).write_text(json.dumps({"args": meta, "layers": results}, indent=1))


def _print(results: Dict[str, List[dict]]) -> None:
    names = list(results)
    print("| layer | " + " | ".join(f"{v} s (read GB)" for v in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    n = max(len(r) for r in results.values())
    for k in sorted({0, 1, n // 4, n // 2, 3 * n // 4, n - 1}):
        cells = [f"{r[k]['s']:.2f} ({r[k]['read_gb']:.1f})" if k < len(r) else ""
                 for r in results.values()]
        print(f"| {k} | " + " | ".join(cells) + " |")
    print("| all | " + " | ".join(f"{sum(x['s'] for x in r):.1f} "
                                    f"({sum(x['read_gb'] for x in r):.0f})"
                                    for r in results.values()) + " |")


if __name__ == "__main__":
    main()
