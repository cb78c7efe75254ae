"""AWQ through llm-compressor, the recipe qrecipe sends (AWQModifier + a w4 g128 asymmetric
QuantizationModifier, calibration batch 32), on the inputs of bench_inputs.py, in variants of
where the sequential pipeline keeps the activations between layers; optionally a torch.profiler
summary of one variant (GPU machine: CUDA is required).

    python3 benchmarks/bench_inputs.py WORK --tokenizer .tok --layers 4 --samples 128
    python3 benchmarks/awq_llmc_variants.py WORK/fp16 WORK/rows.pt cpu cuda cpu \\
        [--dtype bfloat16] [--profile cuda] [--json OUT.json]

Each variant runs in this process on a fresh copy of the model; the table gives oneshot's
seconds and seconds per layer. `cpu` is llm-compressor's default (sequential_offload_device),
`cuda` keeps them on the GPU, `cpu_prefetch` adds sequential_prefetch, `model_gpu` keeps them on
the GPU and loads the whole model there (what qrecipe's 80 GB profiles do).
"""
from __future__ import annotations

import argparse
import json
import time

# name: (oneshot's arguments, where the model is loaded)
VARIANTS = {"cpu": ({"sequential_offload_device": "cpu"}, None),
            "cuda": ({"sequential_offload_device": "cuda:0"}, None),
            "cpu_prefetch": ({"sequential_offload_device": "cpu", "sequential_prefetch": True},
                             None),
            "model_gpu": ({"sequential_offload_device": "cuda:0"}, "cuda:0")}


def recipe():
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier
    w = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group",
                         group_size=128)
    groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=w)}
    return [AWQModifier(), QuantizationModifier(config_groups=groups, ignore=["lm_head"])]


def one(model_dir, rows, dtype, variant, profile=False):
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM
    extra, device = VARIANTS[variant]
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, dtype), **({"device_map": {"": device}} if device else {}))
    load_s = time.perf_counter() - t0
    ds = Dataset.from_dict({"input_ids": [r.tolist() for r in rows],
                            "attention_mask": [[1] * len(r) for r in rows]})
    kw = dict(dataset=ds, num_calibration_samples=len(rows), max_seq_length=len(rows[0]),
              shuffle_calibration_samples=False, batch_size=32, **extra)
    prof = None
    if profile:
        from torch.profiler import ProfilerActivity, profile as tprofile
        prof = tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        prof.__enter__()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    oneshot(model=model, recipe=recipe(), **kw)
    torch.cuda.synchronize()
    took = time.perf_counter() - t0
    if prof is not None:
        prof.__exit__(None, None, None)
    layers = model.config.num_hidden_layers
    del model
    torch.cuda.empty_cache()
    return took, layers, prof, load_s


def summary(prof, top=18):
    ka = prof.key_averages()
    cuda = sorted(ka, key=lambda e: e.self_device_time_total, reverse=True)[:top]
    cpu = sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    busy = sum(e.self_device_time_total for e in ka) / 1e6
    print(f"GPU busy (sum of kernel self time): {busy:.2f} s")
    print("| op (GPU self time) | s | calls |\n|---|---|---|")
    for e in cuda:
        print(f"| {e.key[:70]} | {e.self_device_time_total / 1e6:.3f} | {e.count} |")
    print("| op (CPU self time) | s | calls |\n|---|---|---|")
    for e in cpu:
        print(f"| {e.key[:70]} | {e.self_cpu_time_total / 1e6:.3f} | {e.count} |")
    return {"gpu_busy_s": busy,
            "gpu_top": [[e.key, e.self_device_time_total / 1e6, e.count] for e in cuda],
            "cpu_top": [[e.key, e.self_cpu_time_total / 1e6, e.count] for e in cpu]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("rows")
    ap.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--profile", choices=sorted(VARIANTS), help="profile this variant's run")
    ap.add_argument("--json")
    a = ap.parse_args()
    import torch
    rows = torch.load(a.rows)
    doc = {"device": torch.cuda.get_device_name(), "dtype": a.dtype, "rows": len(rows),
           "runs": []}
    print("| variant | load s | oneshot s | per layer s |\n|---|---|---|---|")
    for v in a.variants:
        took, layers, _, load_s = one(a.model, rows, a.dtype, v)
        doc["runs"].append({"variant": v, "load_s": load_s, "oneshot_s": took,
                            "per_layer_s": took / layers})
        print(f"| {v} | {load_s:.2f} | {took:.2f} | {took / layers:.3f} |", flush=True)
    if a.profile:
        took, layers, prof, _ = one(a.model, rows, a.dtype, a.profile, profile=True)
        print(f"profiled {a.profile}: {took:.2f} s (with the profiler)")
        doc["profile"] = {"variant": a.profile, "oneshot_s": took, **summary(prof)}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
