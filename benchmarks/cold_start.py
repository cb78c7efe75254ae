"""A GPTQ job on a fresh GPU machine, as a user runs it: `qrecipe kernels build` once (what a
machine image or a login node does), then the CLI job, timed from the command's start to its
exit, then the same job again (page cache and bytecode warm, the fp baseline cached).

    python3 benchmarks/cold_start.py --tokenizer DIR --work /tmp/cold --out cold.json \
        [--shape llama2-7b] [--layers 32] [--samples 128] [--seq-len 512] \
        [--skip-build] [--runs 2] [-- EXTRA OVERRIDES]

The job: GPTQ w4 g128 through gptqmodel on the h100_80gb profile as shipped (bfloat16, allow_jit,
kernel auto), 128 x 512 rows of qrecipe's shipped text, the default evaluation (WikiText-2 test
shipped in the package, 8 windows of 512, the fp baseline and decode speed). The model is
benchmarks/random_llama.py's (never for quality claims), written before the clock starts: it is
in the page cache, as a model on a local disk read once before would be. Prints a table (wall,
each stage of metrics.json, qrecipe's own share) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from gpu_bench import _versions  # noqa: E402
from gpu_bench_jobs import TEXT  # noqa: E402


def job_args(a, model_dir: Path, cache: Path, out: Path) -> list:
    return ["method=gptq", "method.backend=gptqmodel", "bits=w4", "bits.group_size=128",
            "model=local", f"model.path={model_dir}", "calibration=local",
            f"calibration.path={TEXT}", f"calibration.num_samples={a.samples}",
            f"calibration.seq_len={a.seq_len}", f"hardware={a.hardware}",
            f"cache.dir={cache}", f"hydra.run.dir={out}",
            "recipe_name=cold_start", *a.extra]


def timed(cmd: list, log: Path, env: dict) -> tuple:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0


def one_job(a, model_dir: Path, cache: Path, work: Path, n: int, env: dict) -> dict:
    out = work / f"run{n}"
    rc, wall = timed([sys.executable, "-m", "qrecipe", *job_args(a, model_dir, cache, out)],
                     work / f"run{n}.log", env)
    row = {"run": n, "rc": rc, "wall_s": round(wall, 2)}
    if rc or not (out / "metrics.json").is_file():
        row["log_tail"] = (work / f"run{n}.log").read_text()[-2000:]
        return row
    m = json.loads((out / "metrics.json").read_text())
    d = m.get("quantize_details") or {}
    per = [r["seconds"] for r in m.get("per_layer") or []]
    row.update(stages_s=m.get("time_s"), overhead=m.get("overhead"),
               kernel=(m.get("kernel") or {}).get("resolved"),
               per_layer=per, first_layer_s=per[0] if per else None,
               per_layer_median_s=sorted(per)[len(per) // 2] if per else None,
               gptq_cuda_block_update=d.get("gptq_cuda_block_update"),
               eval={k: v for k, v in (m.get("eval") or {}).items() if k != "protocol"},
               built_in_job="compiling torch.ops JIT extension" in
               (work / f"run{n}.log").read_text())
    return row


def table(doc: dict) -> str:
    out = [f"kernels build: {doc['build'].get('wall_s')} s wall" if doc.get("build")
           else "kernels build: skipped", "",
           "| run | wall s | stages s | first layer s | per layer s (median) | own share "
           "| kernel | built in job |", "|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        st = ", ".join(f"{k} {v:.1f}" for k, v in (r.get("stages_s") or {}).items()
                       if isinstance(v, (int, float)))
        own = (r.get("overhead") or {}).get("qrecipe_own_share")
        out.append(f"| {r['run']} | {r['wall_s']} | {st} | {r.get('first_layer_s')} | "
                   f"{r.get('per_layer_median_s')} | {own} | {r.get('kernel')} | "
                   f"{r.get('built_in_job')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--work", default="/tmp/cold_start")
    ap.add_argument("--out", default="cold_start.json")
    ap.add_argument("--shape", default="llama2-7b")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--hardware", default="h100_80gb")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("extra", nargs="*", help="more overrides of the job")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir, cache = work / "fp16", work / "qcache"
    if not (model_dir / "config.json").exists():
        subprocess.run([sys.executable, str(HERE / "random_llama.py"), str(model_dir),
                        "--tokenizer", a.tokenizer, "--shape", a.shape, "--layers",
                        str(a.layers)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTQMODEL_TORCH_EXT")}
    import torch
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    doc = {"device": gpu, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                          time.gmtime()),
           "versions": _versions(), "command": " ".join(["python3"] + sys.argv),
           "shape": a.shape, "layers": a.layers, "rows": [a.samples, a.seq_len], "runs": []}
    if not a.skip_build:
        rc, wall = timed([sys.executable, "-m", "qrecipe", "kernels", "build", f"hardware={a.hardware}",
                          f"cache.dir={cache}"], work / "build.log", env)
        doc["build"] = {"rc": rc, "wall_s": round(wall, 1),
                        "lines": (work / "build.log").read_text().splitlines()[-12:]}
        print("\n".join(doc["build"]["lines"]), flush=True)
    for n in range(1, a.runs + 1):
        doc["runs"].append(one_job(a, model_dir, cache, work, n, env))
        print(json.dumps({k: v for k, v in doc["runs"][-1].items() if k != "overhead"}),
              flush=True)
        Path(a.out).write_text(json.dumps(doc, indent=1, default=str))
    print(table(doc))


if __name__ == "__main__":
    main()
