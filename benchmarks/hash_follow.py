"""The sha256 left after a write, one file against shards of backends.base.SHARD_BYTES, when the
writer is faster than one sha256 stream (the regime of the H200 host: gptqmodel wrote 3.9 GB in
~2 s, one sha256 stream ran at ~1 GB/s). The writer here copies a ready buffer with os.write, so
it outruns sha256 on most CPUs; each file gets a filehash.Follower, as gptqmodel's shards do in a
qrecipe run (qrecipe/backends/gptqmodel/shards.py), and the followers of different files run side
by side.

    PYTHONPATH=. python benchmarks/hash_follow.py WORK_DIR [--gb 3.9] [--repeat 3] [--json OUT]
        [--writer os|tobytes] [--chunks-mib 8,64] [--layouts "one file,SHARD_BYTES,1GiB"]

--writer tobytes writes as gptqmodel 7.6's `_write_tensor_bytes` does: `tensor.numpy().tobytes()`
(a copy that holds the GIL) then a buffered write (which releases it), 22.5 MB tensors (a 7B
model's 4-bit MLP qweight). --chunks-mib: the follower's read size (filehash.FOLLOW_CHUNK); a
follower takes the GIL twice per chunk, so a writer holding it makes small chunks wait.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

BLOCK = 64 << 20


def _os_write(path: Path, size: int, buf: bytes) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for at in range(0, size, BLOCK):
        os.write(fd, buf[:min(BLOCK, size - at)])
    os.close(fd)
    return size


def _tobytes_write(path: Path, size: int, tensors) -> int:
    with open(path, "wb") as out:  # gptqmodel.utils.model._write_tensor_bytes, per tensor
        done = 0
        while done < size:
            t = tensors[(done // TENSOR_BYTES) % len(tensors)]
            out.write(t.numpy().tobytes())
            done += TENSOR_BYTES
    return done


TENSOR_BYTES = 4096 * 11008 // 2  # int32 qweight of a 4096 x 11008 Linear at 4 bits


def write_followed(work: Path, total: int, shard: int, src, writer) -> dict:
    """Write `total` bytes as files of at most `shard` bytes, each followed; seconds of the write
    and of the wait for the hashing after it."""
    from qrecipe.record import filehash
    followers, t0, left, i = [], time.perf_counter(), total, 0
    with filehash.memo(work / "memo"):
        while left:
            size, i = min(shard, left), i + 1
            path = work / f"model-{i:05d}.safetensors"
            fol = filehash.Follower(path).start()
            followers.append(fol)
            wrote = writer(path, size, src)
            fol.writer_done()
            left -= min(left, wrote)
        t1 = time.perf_counter()
        assert all(f.wait() for f in followers)
        t2 = time.perf_counter()
    return {"files": len(followers), "write_s": round(t1 - t0, 2), "wait_s": round(t2 - t1, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--gb", type=float, default=3.9)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--writer", choices=("os", "tobytes"), default="os")
    ap.add_argument("--chunks-mib", default="", help="follower read sizes to compare "
                    "(default: filehash.FOLLOW_CHUNK)")
    ap.add_argument("--layouts", default="one file,SHARD_BYTES",
                    help="comma-separated: 'one file', SHARD_BYTES (the shipped shard size), "
                         "or a shard size such as 1GiB or 0.5GiB")
    a = ap.parse_args()
    from qrecipe.backends.base import SHARD_BYTES
    from qrecipe.record import filehash
    work, total = Path(a.work), int(a.gb * 1e9)
    if a.writer == "os":
        src, writer = os.urandom(BLOCK), _os_write
    else:
        import torch
        src = [torch.randint(0, 2**31 - 1, (TENSOR_BYTES // 4,), dtype=torch.int32)
               for _ in range(4)]
        writer = _tobytes_write
    chunks = [int(c) << 20 for c in a.chunks_mib.split(",") if c] or [filehash.FOLLOW_CHUNK]
    layouts = {"one file": total, "SHARD_BYTES": SHARD_BYTES,
               **{n: int(float(n[:-3]) * (1 << 30)) for n in a.layouts.split(",")
                  if n.endswith("GiB")}}
    rows = []
    for _ in range(a.repeat):
        for name in a.layouts.split(","):
            for chunk in chunks:
                filehash.FOLLOW_CHUNK = chunk
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                rows.append({"layout": name, "writer": a.writer, "chunk_mib": chunk >> 20,
                             **write_followed(work, total, layouts[name], src, writer)})
    shutil.rmtree(work, ignore_errors=True)
    print(f"{total / 1e9:.2f} GB, {os.cpu_count()} CPUs, writer {a.writer}")
    print("| layout | follower chunk MiB | files | write s | sha256 wait after the write s |\n"
          "|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['chunk_mib']} | {r['files']} | {r['write_s']} | "
              f"{r['wait_s']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
