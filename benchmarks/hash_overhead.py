"""Seconds qrecipe spends hashing around the backend: the input model's fingerprint (load
stage) and the manifest of a finished run, without and with the file-hash memo (filehash.py).

    PYTHONPATH=. python benchmarks/hash_overhead.py MODEL_DIR [--run RUN_DIR] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--run", help="a finished run directory (its manifest is rewritten in a copy)")
    ap.add_argument("--json")
    a = ap.parse_args()

    from omegaconf import OmegaConf

    from qrecipe.inputs import models
    from qrecipe.record import filehash, outputs

    cfg = OmegaConf.create({"source": "local", "path": a.model_dir})
    size = sum(p.stat().st_size for p in Path(a.model_dir).iterdir() if p.is_file())
    rows = []

    def timed(what, fn):
        t0 = time.perf_counter()
        value = fn()
        rows.append({"what": what, "seconds": round(time.perf_counter() - t0, 3)})
        return value

    fresh = timed("model fingerprint, no memo", lambda: models.fingerprint(cfg))
    with tempfile.TemporaryDirectory() as memo, filehash.memo(Path(memo)):
        first = timed("model fingerprint, memo empty (hash + store)",
                      lambda: models.fingerprint(cfg))
        hit = timed("model fingerprint, memo hit", lambda: models.fingerprint(cfg))
        if a.run:
            timed("manifest, memo empty", lambda: outputs.write_manifest(Path(a.run)))
            timed("manifest, memo hit (as after the save stage hashed the weights)",
                  lambda: outputs.write_manifest(Path(a.run)))
    assert fresh == first == hit, "the memo changed a fingerprint"
    print(f"model {a.model_dir}: {size / 1e6:.0f} MB; fingerprint {fresh[:16]} (identical)")
    for r in rows:
        print(f"{r['what']:<58} {r['seconds']:>7.2f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"model_bytes": size, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
