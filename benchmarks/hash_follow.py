"""The sha256 left after a write, one file against shards of backends.base.SHARD_BYTES, when the
writer is faster than one sha256 stream (the regime of the H200 host: gptqmodel wrote 3.9 GB in
~2 s, one sha256 stream ran at ~1 GB/s). The writer here copies a ready buffer with os.write, so
it outruns sha256 on most CPUs; each file gets a filehash.Follower, as gptqmodel's shards do in a
qrecipe run (qrecipe/backends/gptqmodel_shards.py), and the followers of different files run side
by side.

    PYTHONPATH=. python benchmarks/hash_follow.py WORK_DIR [--gb 3.9] [--repeat 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

BLOCK = 64 << 20


def write_followed(work: Path, total: int, shard: int, buf: bytes) -> dict:
    """Write `total` bytes as files of at most `shard` bytes, each followed; seconds of the write
    and of the wait for the hashing after it."""
    from qrecipe import filehash
    followers, t0, left, i = [], time.perf_counter(), total, 0
    with filehash.memo(work / "memo"):
        while left:
            size, i = min(shard, left), i + 1
            path = work / f"model-{i:05d}.safetensors"
            fol = filehash.Follower(path).start()
            followers.append(fol)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            for at in range(0, size, BLOCK):
                os.write(fd, buf[:min(BLOCK, size - at)])
            os.close(fd)
            fol.writer_done()
            left -= size
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
    a = ap.parse_args()
    from qrecipe.backends.base import SHARD_BYTES
    work, total = Path(a.work), int(a.gb * 1e9)
    buf = os.urandom(BLOCK)
    rows = []
    for _ in range(a.repeat):
        for name, shard in (("one file", total), ("SHARD_BYTES", SHARD_BYTES)):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            rows.append({"layout": name, **write_followed(work, total, shard, buf)})
    shutil.rmtree(work, ignore_errors=True)
    print(f"{total / 1e9:.2f} GB, {os.cpu_count()} CPUs")
    print("| layout | files | write s | sha256 wait after the write s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['files']} | {r['write_s']} | {r['wait_s']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
