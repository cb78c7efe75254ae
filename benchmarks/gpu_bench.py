"""Side by side on one GPU: qrecipe vs each backend's own API with its defaults, same model, same
calibration rows; then reload + speed of every checkpoint format per kernel, against fp16.

    python benchmarks/gpu_bench.py --tokenizer DIR --work /tmp/bench --out results.json \
        [--shape llama2-7b] [--layers 4] [--samples 128] [--seq-len 512] [--only gptq,awq,...]

One invocation: builds a Llama-shaped random fp16 model (benchmarks/random_llama.py's shapes; never
for quality claims), cuts the calibration rows once (qrecipe's own sampler, pkg://qrecipe/texts),
then runs every job in a fresh process (so imports, JIT builds and CUDA state of one job do not
help the next, and peak GPU memory is per job). Jobs with passes "cold" and "warm" run twice: cold
starts with an empty kernel cache for that job (gptqmodel's extension dir, Triton's cache), warm
reuses what cold built. Prints a table and writes JSON (benchmarks/results/gpu_bench_h100.json).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

# (method, backend, runner, passes, extra qrecipe overrides / default kwargs)
JOBS = [  # "qrecipe": the h100_80gb profile as shipped; "qrecipe_tuned": plus the named overrides
    ("gptq", "gptqmodel", "backend_default", ("cold", "warm"), {}),
    ("gptq", "gptqmodel", "qrecipe", ("cold", "warm"), {}),
    ("gptq", "gptqmodel", "qrecipe_tuned", ("warm",), {"hardware.allow_jit": True}),
    ("gptq", "llmcompressor", "backend_default", ("warm",), {}),
    ("gptq", "llmcompressor", "qrecipe", ("warm",), {}),
    ("rtn", "gptqmodel", "qrecipe", ("cold",), {}),
    ("bnb4", "bitsandbytes", "backend_default", ("cold",), {}),
    ("bnb4", "bitsandbytes", "qrecipe", ("cold",), {}),
    ("bnb8", "bitsandbytes", "backend_default", ("cold",), {}),
    ("bnb8", "bitsandbytes", "qrecipe", ("cold",), {}),
    ("speed", None, None, (), {}),  # reload + speed of the checkpoints made so far
    ("awq", "gptqmodel", "backend_default", ("cold",), {}),
    ("awq", "gptqmodel", "qrecipe", ("cold",), {}),
    ("awq", "gptqmodel", "qrecipe_tuned", ("cold",), {"hardware.calib_batch_size": 16}),
    ("awq", "llmcompressor", "qrecipe", ("cold",), {}),
    ("speed", None, None, (), {}),
]
# Kernels whose reload + speed is measured, per checkpoint format (qrecipe/kernels.py names).
SPEED_KERNELS = {"gptq": tuple(os.environ.get("BENCH_GPTQ_KERNELS", "torch,marlin").split(",")),
                 "awq": tuple(os.environ.get("BENCH_AWQ_KERNELS", "torch").split(",")),
                 "compressed-tensors": ("compressed", "dequantized"),
                 "bitsandbytes": ("bitsandbytes",)}
TEXT = "pkg://qrecipe/texts/jargon_file_4.4.7.txt"


# ----------------------------------------------------------------------------- child: one job
def _peak_gpu():
    import torch
    return int(torch.cuda.max_memory_allocated())


def job_qrecipe(spec, work: Path) -> dict:
    from hydra import compose, initialize_config_dir
    from qrecipe import schema
    from qrecipe.paths import config_dir
    from qrecipe.runner import run_job

    method = {"bnb4": "bnb", "bnb8": "bnb"}.get(spec["method"], spec["method"])
    ov = [f"method={method}", f"method.backend={spec['backend']}", "model=local",
          f"model.path={spec['model']}", "calibration=local", f"calibration.path={TEXT}",
          f"calibration.num_samples={spec['samples']}", f"calibration.seq_len={spec['seq_len']}",
          "hardware=h100_80gb", "hardware.dtype=float16", "eval=none",
          "hardware.assign_gpus=false",
          f"cache.dir={work / 'qcache'}", f"recipe_name=bench_{spec['name']}",
          "bits=w8" if spec["method"] == "bnb8" else "bits=w4", "bits.group_size=128"]
    ov += [f"{k}={v}" for k, v in spec["extra"].items()]
    schema.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose(config_name="config", overrides=ov)
    out = Path(spec["out"])
    t0 = time.perf_counter()
    status = run_job(cfg, out, keep_failed_dir=True)
    wall = time.perf_counter() - t0
    if status != "ok":
        err = json.loads((out / "error.json").read_text()) if (out / "error.json").exists() else {}
        raise RuntimeError(f"qrecipe {status}: {err.get('error')}")
    m = json.loads((out / "metrics.json").read_text())
    d = m["quantize_details"]
    q = (d.get("seconds") or {}).get("quantize") or m["time_s"]["quantize"]
    fps = json.loads((out / "fingerprints.json").read_text())
    return {"wall_s": wall, "quantize_s": q, "stages_s": m["time_s"],
            "overhead_s": wall - q,
            # metrics.json's own split: wall less imports, library seconds and evaluation
            "qrecipe_overhead": m.get("overhead"), "rows_sha256": fps.get("calibration", {}).get(
                "token_ids_sha256"), "model_dir": str(out / "model"), "details": {
                k: d.get(k) for k in ("calib_batch_size", "pack_impl", "offload_to_disk",
                                      "gptq_cuda_block_update", "seconds", "dtype")}}


def job_default(spec, work: Path) -> dict:
    import torch
    rows = torch.load(spec["rows"])
    out = Path(spec["out"])
    t0 = time.perf_counter()
    m, b = spec["method"], spec["backend"]
    if b == "gptqmodel":
        from gptqmodel import GPTQModel, QuantizeConfig
        qc = QuantizeConfig(bits=4, group_size=128) if m == "gptq" else \
            QuantizeConfig(bits=4, group_size=128, method="awq", format="gemm")
        model = GPTQModel.load(spec["model"], qc)
        data = [{"input_ids": r.tolist(), "attention_mask": [1] * len(r)} for r in rows]
        t1 = time.perf_counter()
        model.quantize(data)
        t2 = time.perf_counter()
        model.save(str(out))
    elif b == "llmcompressor":
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype="auto")
        ds = Dataset.from_dict({"input_ids": [r.tolist() for r in rows],
                                "attention_mask": [[1] * len(r) for r in rows]})
        t1 = time.perf_counter()
        oneshot(model=model, dataset=ds, recipe=GPTQModifier(targets="Linear", scheme="W4A16",
                                                             ignore=["lm_head"]),
                num_calibration_samples=len(rows), max_seq_length=spec["seq_len"])
        t2 = time.perf_counter()
        model.save_pretrained(str(out), save_compressed=True)
    else:  # bitsandbytes
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig
        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4") \
            if m == "bnb4" else BitsAndBytesConfig(load_in_8bit=True)
        t1 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(spec["model"], quantization_config=qc,
                                                     device_map={"": "cuda"})
        t2 = time.perf_counter()
        model.save_pretrained(str(out))
    t3 = time.perf_counter()
    return {"wall_s": t3 - t0, "quantize_s": t2 - t1, "model_dir": str(out)}


def job_speed(spec, work: Path) -> dict:
    import torch
    from qrecipe import models
    from qrecipe.kernels import configure_jit_cache, loaded_kernels
    from qrecipe.speed import measure

    configure_jit_cache(work / "qcache")
    ids = torch.load(spec["rows"])[0]
    t0 = time.perf_counter()
    if spec["kernel"] == "fp16":
        model = models.load_causal_lm(Path(spec["model_dir"]), "float16", "cuda")
    else:
        model = models.load_causal_lm(Path(spec["model_dir"]), "auto", "cuda",
                                      kernel=spec["kernel"], allow_jit=True)
    load_s = time.perf_counter() - t0
    gen = model.generate(ids[:16].unsqueeze(0).cuda(), max_new_tokens=8, do_sample=False,
                         pad_token_id=0)
    res = {"load_s": load_s, "generated_tokens": int(gen.shape[1] - 16),
           "loaded_modules": loaded_kernels(model),
           "weights_bytes": int(model.get_memory_footprint())}
    for b in (1, 8):
        res[f"b{b}"] = measure(model, ids, 128, 32, batch=b, repeats=3)
    res["reload_ok"] = res["generated_tokens"] == 8
    return res


def child(spec_path: str) -> None:
    import logging
    import torch
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["work"])
    torch.cuda.reset_peak_memory_stats()
    fn = {"qrecipe": job_qrecipe, "qrecipe_tuned": job_qrecipe, "backend_default": job_default,
          "speed": job_speed}[spec["runner"]]
    res = fn(spec, work)
    res["peak_gpu_bytes"] = _peak_gpu()
    Path(spec["result"]).write_text(json.dumps(res, default=str))


# ----------------------------------------------------------------------------- parent
def _run_child(spec: dict, work: Path, env_extra: dict, timeout: int) -> dict:
    n = spec["name"]
    sp, rp = work / f"{n}.spec.json", work / f"{n}.result.json"
    spec = {**spec, "work": str(work), "result": str(rp)}
    sp.write_text(json.dumps(spec))
    rp.unlink(missing_ok=True)
    env = {**os.environ, **env_extra}
    t0 = time.perf_counter()
    log = open(work / f"{n}.log", "w")
    try:
        p = subprocess.run([sys.executable, __file__, "--child", str(sp)], env=env, stdout=log,
                           stderr=subprocess.STDOUT, timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    proc_s = time.perf_counter() - t0
    if rc == 0 and rp.exists():
        r = json.loads(rp.read_text())
        r["process_s"] = proc_s
        return r
    tail = (work / f"{n}.log").read_text()[-1500:]
    return {"error": f"rc={rc}", "log_tail": tail, "process_s": proc_s}


def _dir_bytes(p: str) -> int:
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--tokenizer")
    ap.add_argument("--work", default="/tmp/gpu_bench")
    ap.add_argument("--out", default="gpu_bench.json")
    ap.add_argument("--shape", default="llama2-7b")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--only", default="", help="comma list of methods (gptq,awq,rtn,bnb4,bnb8)")
    ap.add_argument("--backends", default="", help="comma list of backends to keep")
    ap.add_argument("--runners", default="", help="comma list of runners to keep")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--job-timeout", type=int, default=900)
    a = ap.parse_args()
    if a.child:
        return child(a.child)

    import torch
    from random_llama import SHAPES
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model_dir = work / "fp16"
    hidden, inter, heads, kv = SHAPES[a.shape]
    if not (model_dir / "config.json").exists():
        subprocess.run([sys.executable, str(HERE / "random_llama.py"), str(model_dir),
                        "--tokenizer", a.tokenizer, "--shape", a.shape, "--layers",
                        str(a.layers)], check=True)
    rows_path = work / "rows.pt"
    rows_sha = _rows(model_dir, a, rows_path, work)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    doc = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime()),
           "versions": _versions(), "command": " ".join([Path(sys.executable).name] + sys.argv),
           "shape": {"name": a.shape, "hidden": hidden, "intermediate": inter,
                     "layers": a.layers, "heads": heads, "kv_heads": kv, "vocab": vocab},
           "calibration": {"num_samples": a.samples, "seq_len": a.seq_len,
                           "rows_sha256": rows_sha, "text": TEXT},
           "rows": [], "speed": []}
    out_json = Path(a.out)

    def save():
        doc["total_s"] = round(time.perf_counter() - t_start, 1)
        out_json.write_text(json.dumps(doc, indent=1, default=str))

    only = set(filter(None, a.only.split(",")))
    keep_b = set(filter(None, a.backends.split(",")))
    keep_r = set(filter(None, a.runners.split(",")))
    checkpoints = {}  # format -> model dir of the qrecipe warm/last run
    done_speed = set()
    for method, backend, runner, passes, extra in JOBS:
        if method == "speed":
            if not a.no_speed:
                _speed(doc, checkpoints, model_dir, rows_path, work, a, save, t_start, done_speed)
            continue
        if (only and method not in only) or (keep_b and backend not in keep_b) or \
                (keep_r and runner not in keep_r):
            continue
        base = f"{method}-{backend}-{runner}"
        kcache = work / f"kcache-{base}"
        shutil.rmtree(kcache, ignore_errors=True)
        for pas in passes:
            name = f"{base}-{pas}"
            out = work / "out" / name
            shutil.rmtree(out, ignore_errors=True)
            spec = {"name": name, "method": method, "backend": backend, "runner": runner,
                    "extra": extra, "model": str(model_dir), "rows": str(rows_path),
                    "samples": a.samples, "seq_len": a.seq_len, "out": str(out)}
            # a per-job kernel cache: cold starts empty, warm finds what cold built
            env = {"TRITON_CACHE_DIR": str(kcache / "triton")}
            if runner == "backend_default":
                env.update(GPTQMODEL_TORCH_EXTENSIONS_DIR=str(kcache / "ext"),
                           GPTQMODEL_CACHE_DIR=str(kcache / "gptqmodel"))
            else:
                (work / "qcache").mkdir(exist_ok=True)
                env.update(QRECIPE_CACHE=str(work / "qcache"),
                           GPTQMODEL_TORCH_EXTENSIONS_DIR=str(kcache / "ext"),
                           GPTQMODEL_CACHE_DIR=str(kcache / "gptqmodel"))
            print(f"[{time.perf_counter() - t_start:6.0f}s] {name} ...", flush=True)
            r = _run_child(spec, work, env, a.job_timeout)
            row = {"method": method, "backend": backend, "runner": runner, "pass": pas,
                   "extra": extra, **r}
            if "quantize_s" in r:
                # bnb quantizes while loading: its whole load over the layers
                row["per_layer_s"] = r["quantize_s"] / a.layers
                row["disk_bytes"] = _dir_bytes(r["model_dir"])
                if runner == "qrecipe":
                    fmt = {"gptqmodel": "awq" if method == "awq" else "gptq",
                           "llmcompressor": "compressed-tensors"}.get(backend, "bitsandbytes")
                    key = method if backend == "gptqmodel" else f"{method}-{backend}"
                    if method != "rtn":  # same format and kernels as gptq
                        checkpoints.setdefault(key, (fmt, r["model_dir"]))
            if r.get("rows_sha256") and r["rows_sha256"] != rows_sha:
                row["rows_mismatch"] = True
            print(f"         -> {_short(row)}", flush=True)
            doc["rows"].append(row)
            save()
    _ratios(doc)
    save()
    print_table(doc)


def _speed(doc, checkpoints, model_dir, rows_path, work, a, save, t_start, done):
    targets = [("fp16", "fp16", str(model_dir))]
    for method, (fmt, d) in checkpoints.items():
        for k in SPEED_KERNELS[fmt]:
            targets.append((method, k, d))
    for method, kernel, d in targets:
        if (method, kernel) in done:
            continue
        done.add((method, kernel))
        name = f"speed-{method}-{kernel}"
        print(f"[{time.perf_counter() - t_start:6.0f}s] {name} ...", flush=True)
        r = _run_child({"name": name, "runner": "speed", "kernel": kernel, "model_dir": d,
                        "rows": str(rows_path)}, work,
                       {"TRITON_CACHE_DIR": str(work / "triton-speed")}, a.job_timeout)
        row = {"method": method, "kernel": kernel, **r}
        print(f"         -> {_short_speed(row)}", flush=True)
        doc["speed"].append(row)
        save()
    # each quantize row gets reload_ok and the kernel of its checkpoint's auto choice
    auto = {"gptq": "torch", "awq": "torch", "rtn": "torch", "bnb4": "bitsandbytes",
            "bnb8": "bitsandbytes"}
    for row in doc["rows"]:
        if row["runner"] == "backend_default" or "error" in row:
            continue
        k = auto.get(row["method"], "compressed") if row["backend"] != "llmcompressor" \
            else "compressed"
        key = row["method"] if row["backend"] == "gptqmodel" else \
            f"{row['method']}-{row['backend']}"
        key = "gptq" if key == "rtn" else key
        sp = next((s for s in doc["speed"] if s["method"] == key
                   and s["kernel"] == k), None)
        if sp:
            row["reload_ok"] = bool(sp.get("reload_ok"))
            row["kernel"] = k


def _ratios(doc):
    rows, sp = doc["rows"], doc["speed"]

    def get(method, backend, runner, pas="warm", key="per_layer_s"):
        for r in rows:
            if (r["method"], r["backend"], r["runner"]) == (method, backend, runner) and \
                    r.get("pass") == pas and key in r:
                return r[key]
        return None

    rat = {}
    for method, backend, pas in (("gptq", "gptqmodel", "warm"), ("gptq", "gptqmodel", "cold"),
                                 ("gptq", "llmcompressor", "warm"),
                                 ("gptq", "llmcompressor", "cold"), ("awq", "gptqmodel", "cold")):
        d = get(method, backend, "backend_default", pas)
        for runner in ("qrecipe", "qrecipe_tuned"):
            q = get(method, backend, runner, pas)
            if d and q:
                rat[f"{method}/{backend}/{runner}/{pas}: per_layer vs default"] = round(q / d, 3)
            w, dw = get(method, backend, runner, pas, "wall_s"), \
                get(method, backend, "backend_default", pas, "wall_s")
            if w and dw:
                rat[f"{method}/{backend}/{runner}/{pas}: wall vs default"] = round(w / dw, 3)
    for r in rows:
        if r["runner"].startswith("qrecipe") and "overhead_s" in r and r.get("wall_s"):
            rat[f"{r['method']}/{r['backend']}/{r['runner']}/{r['pass']}: overhead share"] = \
                round(r["overhead_s"] / r["wall_s"], 3)
    fp = next((s for s in sp if s["kernel"] == "fp16" and "b1" in s), None)
    if fp:
        for s in sp:
            if s["kernel"] != "fp16" and "b1" in s:
                for b in ("b1", "b8"):
                    for key in ("decode_tokens_per_s", "prefill_tokens_per_s"):
                        rat[f"{s['method']}/{s['kernel']}/{b}: {key} vs fp16"] = round(
                            s[b][key] / fp[b][key], 3)
        w = fp.get("weights_bytes")
        ms = fp["b1"].get("decode_ms_per_step")
        if w and ms:
            # bandwidth bound: every weight byte read once per token at ~3.0 TB/s (KINDS.md)
            doc["fp16_bound_ms_per_token"] = w / 3.0e12 * 1000
            rat["fp16/b1: measured ms per token over bandwidth bound"] = round(
                ms / doc["fp16_bound_ms_per_token"], 2)
    doc["ratios"] = rat


def _rows(model_dir: Path, a, rows_path: Path, work: Path) -> str:
    """Calibration rows cut by qrecipe's own code (the ones a qrecipe run with the same settings
    cuts), saved for the backend-default jobs."""
    import torch
    from omegaconf import OmegaConf
    from qrecipe import data
    from qrecipe.cache import Cache
    from qrecipe.fingerprint import hash_files
    from qrecipe.models import load_tokenizer

    tok = load_tokenizer(model_dir)
    tok_fp = hash_files(p for p in model_dir.iterdir() if p.name.startswith("tokenizer"))
    c = OmegaConf.create({"source": "local", "path": TEXT, "name": None, "split": "train",
                          "text_field": "text"})
    ids = data.token_ids(data.TextSpec.from_cfg("calibration", c), tok, tok_fp,
                         Cache(work / "qcache"))
    rows = data.calibration_rows(ids, a.samples, a.seq_len, 0)
    torch.save(rows, rows_path)
    return data.rows_fingerprint(rows)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": sys.version.split()[0]}
    for d in ("torch", "transformers", "gptqmodel", "llmcompressor", "compressed-tensors",
              "bitsandbytes", "triton", "optimum"):
        try:
            out[d] = version(d)
        except PackageNotFoundError:
            out[d] = None
    import torch
    out["cuda"] = torch.version.cuda
    return out


def _short(r) -> str:
    if "error" in r:
        return f"ERROR {r['error']}: {r['log_tail'][-300:]}"
    return (f"per_layer {r.get('per_layer_s', 0):.2f}s wall {r.get('wall_s', 0):.1f}s "
            f"peak {r.get('peak_gpu_bytes', 0) / 2**30:.1f}GiB")


def _short_speed(r) -> str:
    if "error" in r:
        return f"ERROR {r['error']}: {r['log_tail'][-300:]}"
    return " ".join(f"{b}: prefill {r[b]['prefill_tokens_per_s']:.0f} decode "
                    f"{r[b]['decode_tokens_per_s']:.0f} tok/s ({r[b]['decode_path']})"
                    for b in ("b1", "b8"))


def print_table(doc) -> None:
    print(f"\n{doc['device']}  {doc['shape']}  calib {doc['calibration']['num_samples']}x"
          f"{doc['calibration']['seq_len']}")
    print(f"{'method':6} {'backend':13} {'runner':15} {'pass':5} {'per_layer_s':>11} "
          f"{'wall_s':>8} {'overhead':>8} {'peakGiB':>8} {'diskMB':>8} reload kernel")
    for r in doc["rows"]:
        if "error" in r:
            print(f"{r['method']:6} {r['backend']:13} {r['runner']:15} {r['pass']:5} "
                  f"ERROR {r['error']}")
            continue
        print(f"{r['method']:6} {r['backend']:13} {r['runner']:15} {r['pass']:5} "
              f"{r['per_layer_s']:11.2f} {r['wall_s']:8.1f} {r.get('overhead_s', 0):8.1f} "
              f"{r['peak_gpu_bytes'] / 2**30:8.2f} {r['disk_bytes'] / 1e6:8.0f} "
              f"{str(r.get('reload_ok', '-')):6} {r.get('kernel', '-')}")
    print(f"\n{'model':6} {'kernel':12} {'load_s':>6} {'b1 prefill':>10} {'b1 decode':>9} "
          f"{'path':5} {'b8 prefill':>10} {'b8 decode':>9} {'path':5} modules")
    for s in doc["speed"]:
        if "error" in s:
            print(f"{s['method']:6} {s['kernel']:12} ERROR {s['error']}")
            continue
        b1, b8 = s["b1"], s["b8"]
        print(f"{s['method']:6} {s['kernel']:12} {s['load_s']:6.1f} "
              f"{b1['prefill_tokens_per_s']:10.0f} {b1['decode_tokens_per_s']:9.1f} "
              f"{b1['decode_path']:5} {b8['prefill_tokens_per_s']:10.0f} "
              f"{b8['decode_tokens_per_s']:9.1f} {b8['decode_path']:5} {s['loaded_modules']}")
    print()
    for k, v in doc.get("ratios", {}).items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
