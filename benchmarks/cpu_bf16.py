"""float32 against bfloat16 matmuls on this CPU, with what qrecipe/run/dtypes.py reads of it: why a
bfloat16 model runs in float32 on CPUs without AVX-512 or AMX. Prints a table, writes JSON.

    python benchmarks/cpu_bf16.py [--threads 1] [--repeat 10] [--json OUT]

Shapes: SmolLM2-135M's (hidden 576, intermediate 1536) over a 512-token row, and a 4096 x 4096
Linear over 64 tokens.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = [(512, 576, 1536), (512, 1536, 576), (64, 4096, 4096)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--json")
    a = ap.parse_args()
    import torch

    from qrecipe.run.dtypes import cpu_fast_bf16
    torch.set_num_threads(a.threads)
    rows = []
    for m, k, n in SHAPES:
        row = {"shape": f"{m}x{k} @ {k}x{n}"}
        for dt in (torch.float32, torch.bfloat16):
            x, w = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
            x @ w  # warm-up
            t0 = time.perf_counter()
            for _ in range(a.repeat):
                x @ w
            row[str(dt).split(".")[1]] = (time.perf_counter() - t0) / a.repeat * 1000
        row["bf16 / fp32"] = row["bfloat16"] / row["float32"]
        rows.append(row)
    doc = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
           "threads": a.threads, "capability": torch.backends.cpu.get_cpu_capability(),
           "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
           "qrecipe_fast_bf16": cpu_fast_bf16(), "rows": rows}
    print(f"torch {doc['torch']}, {a.threads} thread(s), capability {doc['capability']}, "
          f"oneDNN bf16 {doc['mkldnn_bf16']}, qrecipe.run.dtypes.cpu_fast_bf16() "
          f"{doc['qrecipe_fast_bf16']}")
    print("| matmul | float32 ms | bfloat16 ms | bf16 / fp32 |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['float32']:.1f} | {r['bfloat16']:.1f} | "
              f"{r['bf16 / fp32']:.1f}x |")
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
