"""One gptqmodel GPTQ quantize per variant (fresh process each), same model and rows: which of
qrecipe's settings costs or saves time against GPTQModel's defaults.

    python benchmarks/gptqmodel_knobs.py MODEL_DIR ROWS.pt [variant ...]
"""
import json
import os
import subprocess
import sys
import time

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
}


def one(model_dir, rows_path, name):
    import torch
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    qkw, kw, _ = VARIANTS[name]
    rows = torch.load(rows_path)
    data = [{"input_ids": r.tolist(), "attention_mask": [1] * len(r)} for r in rows]
    if "backend" in kw:
        kw = {**kw, "backend": BACKEND(kw["backend"])}
    m = GPTQModel.load(model_dir, QuantizeConfig(bits=4, group_size=128, **qkw))
    t0 = time.perf_counter()
    m.quantize(data, **kw)
    print("RESULT", json.dumps({"variant": name, "quantize_s": time.perf_counter() - t0,
                               "config": {k: str(getattr(m.quantize_config, k, None)) for k in (
                                   "pack_impl", "offload_to_disk", "damp_percent",
                                   "act_group_aware", "true_sequential")}}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        one(*sys.argv[2:5])
        sys.exit()
    model_dir, rows = sys.argv[1:3]
    out = []
    for name in sys.argv[3:] or list(VARIANTS):
        env = {**os.environ, **VARIANTS[name][2]}
        p = subprocess.run([sys.executable, __file__, "--one", model_dir, rows, name], env=env,
                           capture_output=True, text=True)
        line = [l for l in p.stdout.splitlines() if l.startswith("RESULT")]
        r = json.loads(line[0][7:]) if line else {"variant": name, "error": p.stderr[-800:]}
        print(r, flush=True)
        out.append(r)
    print(json.dumps(out))
