"""One gptqmodel quantize per variant (fresh process each), same model and rows: which setting
costs or saves time against GPTQModel's defaults, for GPTQ or AWQ.

    python benchmarks/gptqmodel_knobs.py MODEL_DIR ROWS.pt [--method awq] [--rows 64] \
        [--profile VARIANT] [--timeline VARIANT] [--json OUT] [variant ...]

--profile runs that variant's quantize() under cProfile and prints the 40 functions with the most
cumulative time (CUDA work shows up at the Python call that waits for it: .item(), .cpu(), ...).
--timeline runs it under torch.profiler instead and reports how much of the wall the GPU was busy
(the union of its kernels' intervals), the kernel count and the kernels and host ops that took
the most time: the question behind GPTQ's per-layer seconds is whether the GPU works or waits.
Every result also carries gptqmodel's own region timer totals (seconds summed over its worker
threads), timers around GPTQ.quantize / process_batch / hessian_inverse, and the sum of the
modules' GPTQ losses on the calibration rows (whether a setting changed the result).
Model and rows as gpu_bench.py builds them: benchmarks/bench_inputs.py.
"""
import argparse
import json
import os
import subprocess
import sys
import time

# qrecipe's h100_80gb profile, as its gptqmodel adapter passes it (gptqmodel_backend.py): q_b32 is
# its settings without the two speed settings below; q_b32_hmm adds hardware.tensor_core_hessian,
# q_b32_fast adds hardware.fast_layer_loop; q_b32_fast_hmm (both) is the profile as shipped since.
_Q = {"pack_impl": "gpu", "offload_to_disk": False}
_QG = {**_Q, "damp_percent": 0.01, "act_group_aware": True, "true_sequential": True, "sym": False}
VARIANTS = {  # name: (QuantizeConfig kwargs, quantize() kwargs, env)
    "default": ({}, {}, {}),
    "batch8": ({}, {"batch_size": 8}, {}),
    "pack_gpu": ({"pack_impl": "gpu"}, {}, {}),
    "no_offload": ({"offload_to_disk": False}, {}, {}),
    "backend_torch": ({}, {"backend": "gptq_torch"}, {}),
    "no_cuda_ext": ({}, {}, {"GPTQMODEL_DISABLE_GPTQ_CUDA": "1"}),
    "sort_none": ({}, {"calibration_sort": None}, {}),
    "damp001_gar": ({"damp_percent": 0.01, "act_group_aware": True, "true_sequential": True},
                    {}, {}),
    # qrecipe's settings, then one change at a time on top of them
    "qrecipe": (_QG, {"batch_size": 8, "calibration_sort": None}, {}),
    "q_b16": (_QG, {"batch_size": 16, "calibration_sort": None}, {}),
    "q_b32": (_QG, {"batch_size": 32, "calibration_sort": None}, {}),
    "q_not_seq": ({**_QG, "true_sequential": False}, {"batch_size": 8, "calibration_sort": None},
                  {}),
    "q_gc_stage": ({**_QG, "gc_mode": "on_stage_end"}, {"batch_size": 8, "calibration_sort": None},
                   {}),
    # the Hessians X^T X on tensor cores in the activations' dtype, float32 out
    # (qrecipe/backends/gptqmodel/hessian.py); loss_sum says whether the GPTQ error moved
    "q_b32_hmm": (_QG, {"batch_size": 32, "calibration_sort": None}, {"QRECIPE_KNOB_HMM": "1"}),
    # the result-preserving layer-loop patches (qrecipe/backends/gptqmodel/fastloop.py) with the
    # layer inputs kept on the GPU; `digest` must equal q_b32's (q_b32_hmm's for the _hmm one)
    "q_b32_fast": ({**_QG, "calibration_data_device": "cuda:0"},
                   {"batch_size": 32, "calibration_sort": None}, {"QRECIPE_KNOB_FAST": "1"}),
    "q_b32_fast_hmm": ({**_QG, "calibration_data_device": "cuda:0"},
                       {"batch_size": 32, "calibration_sort": None},
                       {"QRECIPE_KNOB_FAST": "1", "QRECIPE_KNOB_HMM": "1"}),
    # AWQ: qrecipe's adapter (zero point, gemm layout, torch packer)
    "awq_default": ({}, {}, {}),
    "awq_qrecipe": ({**_Q, "sym": False}, {"batch_size": 8, "calibration_sort": None,
                                          "backend": "awq_torch"}, {}),
    "awq_unchunked": ({**_Q, "sym": False, "scale_search_chunked_activations": False},
                      {"batch_size": 8, "calibration_sort": None, "backend": "awq_torch"}, {}),
    "awq_unchunked_b32": ({**_Q, "sym": False, "scale_search_chunked_activations": False},
                          {"batch_size": 32, "calibration_sort": None, "backend": "awq_torch"}, {}),
    "awq_gc_stage": ({**_Q, "sym": False, "gc_mode": "on_stage_end"},
                     {"batch_size": 8, "calibration_sort": None, "backend": "awq_torch"}, {}),
}


def timeline(fn) -> dict:
    """fn() under torch.profiler: wall, GPU busy seconds (merged kernel intervals), top ops."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == DeviceType.CUDA)
    busy, end = 0.0, float("-inf")
    for a, b in spans:  # union of intervals, in microseconds
        busy += max(0.0, b - max(a, end))
        end = max(end, b)
    avg = prof.key_averages()

    def top(key):  # the 15 ops with the most `key` time: (name, calls, seconds)
        return [(e.key[:70], e.count, round(getattr(e, key) / 1e6, 3))
                for e in sorted(avg, key=lambda e: -getattr(e, key))[:15]]
    return {"wall_s": wall, "gpu_busy_s": busy / 1e6, "gpu_busy_share": busy / 1e6 / wall,
            "gpu_kernels": len(spans), "top_gpu_s": top("self_device_time_total"),
            "top_host_s": top("self_cpu_time_total")}


# gptqmodel functions whose host seconds (summed over its worker threads) the result reports
_TIMED = (("gptqmodel.quantization.gptq", "GPTQ", "quantize"),
          ("gptqmodel.quantization.gptq", "GPTQ", "process_batch"),
          ("gptqmodel.quantization.gptq", "GPTQ", "hessian_inverse"),
          ("gptqmodel.quantization.gptq", "GPTQ", "finalize_hessian"))


def instrument() -> dict:
    """Wrap _TIMED with timers; GPTQ.quantize's per-module loss (the GPTQ error on the
    calibration rows) is kept too, to compare settings' quality on the same rows."""
    import importlib
    import threading
    stats, lock = {"losses": {}}, threading.Lock()
    for mod, cls, fn in _TIMED:
        owner = getattr(importlib.import_module(mod), cls)
        orig, key = getattr(owner, fn), f"{cls}.{fn}"

        def wrapped(self, *a, _orig=orig, _key=key, **kw):
            t0 = time.perf_counter()
            out = _orig(self, *a, **kw)
            with lock:
                n, s = stats.get(_key, (0, 0.0))
                stats[_key] = (n + 1, s + time.perf_counter() - t0)
                if _key == "GPTQ.quantize" and isinstance(out, tuple) and len(out) > 5:
                    stats["losses"][getattr(self, "name", "?")] = out[5]
            return out
        setattr(owner, fn, wrapped)
    return stats


def regions(model) -> dict:
    """gptqmodel's own QuantizationRegionTimer totals: {region: [count, seconds]}."""
    timer = getattr(model, "quant_region_timer", None)
    return {k: [v["count"], round(v["total"], 3)] for k, v in
            getattr(timer, "_stats", {}).items() if v["count"]}


def digest(model):
    """sha256 of every packed tensor (qweight, qzeros, scales, g_idx) in name order: equal digests
    mean byte-identical checkpoints; None when the layers were offloaded to disk."""
    import hashlib

    import torch
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if v.is_meta:  # offload_to_disk: the packed layers live in files, not in the model
            return None
        if k.rsplit(".", 1)[-1] in ("qweight", "qzeros", "scales", "g_idx"):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def one(model_dir, rows_path, name, method, n_rows, profile, timeline_it=False):
    import contextlib

    import torch
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    qkw, kw, _ = VARIANTS[name]
    # held until one() returns: a context manager entered without being kept is collected at
    # once, and its generator's cleanup switches the patch off again
    patches = contextlib.ExitStack()
    if os.environ.get("QRECIPE_KNOB_HMM"):
        from qrecipe.backends.gptqmodel.hessian import tensor_core_hessian
        patches.enter_context(tensor_core_hessian(True))
    if os.environ.get("QRECIPE_KNOB_FAST"):
        from qrecipe.backends.gptqmodel.fastloop import fast_layer_loop
        patches.enter_context(fast_layer_loop(True))
    stats = instrument()
    rows = torch.load(rows_path)[:n_rows or None]
    data = [{"input_ids": r.tolist(), "attention_mask": [1] * len(r)} for r in rows]
    if "backend" in kw:
        kw = {**kw, "backend": BACKEND(kw["backend"])}
    extra = {"method": "awq", "format": "gemm"} if method == "awq" else {}
    m = GPTQModel.load(model_dir, QuantizeConfig(bits=4, group_size=128, **extra, **qkw),
                       dtype=torch.float16)
    t0 = time.perf_counter()
    if timeline_it:
        print("TIMELINE", json.dumps(timeline(lambda: m.quantize(data, **kw))), flush=True)
    elif profile:
        import cProfile
        import io
        import pstats
        pr = cProfile.Profile()
        pr.runcall(m.quantize, data, **kw)
        s = io.StringIO()
        st = pstats.Stats(pr, stream=s).strip_dirs()
        st.sort_stats("cumulative").print_stats(45)
        st.sort_stats("tottime").print_stats(25)
        print(s.getvalue(), flush=True)
    else:
        m.quantize(data, **kw)
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.synchronize()
    losses = [v for v in stats.pop("losses").values() if isinstance(v, (int, float))]
    print("RESULT", json.dumps({"variant": name, "method": method, "rows": len(rows),
                               "profiled": profile, "quantize_s": time.perf_counter() - t0,
                               "peak_gpu_gib": gpu and torch.cuda.max_memory_allocated() / 2**30,
                               "loss_sum": sum(losses), "modules": len(losses),
                               "digest": digest(m.model),
                               "timed_s": {k: [n, round(s, 3)] for k, (n, s) in stats.items()},
                               "regions_s": regions(m)}),
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("rows")
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--method", default="gptq", choices=("gptq", "awq"))
    ap.add_argument("--rows-n", type=int, default=0, help="use the first N rows (0: all)")
    ap.add_argument("--profile", default="")
    ap.add_argument("--timeline", default="")
    ap.add_argument("--json", default="")
    ap.add_argument("--one", action="store_true")
    a = ap.parse_intermixed_args()
    if a.one:
        return one(a.model_dir, a.rows, a.variants[0], a.method, a.rows_n, a.profile == "1",
                   a.timeline == "1")
    out = []
    for name in a.variants or list(VARIANTS):
        env = {**os.environ, **VARIANTS[name][2]}
        cmd = [sys.executable, __file__, a.model_dir, a.rows, name, "--one", "--method", a.method,
               "--rows-n", str(a.rows_n), "--profile", "1" if name == a.profile else "",
               "--timeline", "1" if name == a.timeline else ""]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if name in (a.profile, a.timeline):
            print(p.stdout[-30000:], flush=True)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")]
        r = json.loads(line[0][7:]) if line else {"variant": name, "error": p.stderr[-800:]}
        tl = [ln for ln in p.stdout.splitlines() if ln.startswith("TIMELINE")]
        if tl:
            r["timeline"] = json.loads(tl[0][9:])
        print(r, flush=True)
        out.append(r)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
