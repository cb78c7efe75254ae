"""The model and calibration rows gpu_bench.py builds, without the benchmark: for
gptqmodel_knobs.py and layer_memory.py on the same inputs (GPU machine: CUDA is required).

    python3 benchmarks/bench_inputs.py WORK --tokenizer .tok [--shape llama2-7b] [--layers 2] \
        [--samples 64] [--seq-len 512]        # writes WORK/fp16/ and WORK/rows.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path

import gpu_bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--shape", default="llama2-7b")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=512)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    doc = gpu_bench.setup(a, work / "fp16", work / "rows.pt", work)
    print(f"{work}: {doc['device']}, rows {doc['calibration']['rows_sha256'][:12]}")


if __name__ == "__main__":
    main()
