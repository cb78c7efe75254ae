"""GPTQ's Hessian X^T X two ways on one GPU: gptqmodel's (activations copied to float32, float32
GEMM) against qrecipe's hardware.tensor_core_hessian (one tensor-core GEMM of the fp16/bf16
activations, float32 out). Prints time and error against a float64 reference; writes JSON.

    python3 benchmarks/hessian_gemm.py [--rows 65536] [--json hessian_gemm.json]
"""
from __future__ import annotations

import argparse
import json
import time


def timed(fn, repeats: int = 3):
    """(result, mean seconds) of fn() after one warm-up, CUDA-synchronized."""
    import torch
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    import torch
    torch.manual_seed(0)
    rows = []
    print("| activations | columns | float32 copy + GEMM | tensor-core GEMM, float32 out | speed-up |")
    print("|---|---|---|---|---|")
    for dt in (torch.float16, torch.bfloat16):
        for cols in (4096, 11008):  # Llama-2-7B: attention/gate/up inputs, down_proj input
            x = (torch.randn(a.rows, cols, device="cuda") * 2).to(dt)
            ref = x.double().T @ x.double()

            def err(h):
                return ((h.double() - ref).abs().max() / ref.abs().max()).item()
            def float32_path():  # gptqmodel's: one float32 copy, then a float32 GEMM
                m = x.float()
                return m.T @ m
            f32, t32 = timed(float32_path)
            tc, ttc = timed(lambda: torch.mm(x.T, x, out_dtype=torch.float32))
            r = {"dtype": str(dt), "rows": a.rows, "cols": cols, "float32_ms": t32 * 1e3,
                 "float32_err": err(f32), "tensor_core_ms": ttc * 1e3, "tensor_core_err": err(tc)}
            rows.append(r)
            print(f"| {str(dt)[6:]} | {cols} | {r['float32_ms']:.1f} ms, error "
                  f"{r['float32_err']:.1e} | {r['tensor_core_ms']:.1f} ms, error "
                  f"{r['tensor_core_err']:.1e} | {t32 / ttc:.1f}x |")
            del x, ref, f32, tc
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
