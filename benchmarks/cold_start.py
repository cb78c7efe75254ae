"""A GPTQ job on a fresh GPU machine, as a user runs it: `qrecipe kernels build` once (what a
machine image or a login node does), then the CLI job, timed from the command's start to its
exit, then the same job again (page cache and bytecode warm, the fp baseline cached).

    python3 benchmarks/cold_start.py --tokenizer DIR --work /tmp/cold --out cold.json \
        [--shape llama2-7b] [--layers 32] [--samples 128] [--seq-len 512] \
        [--skip-build] [--runs 2] [--tag NAME] [-- EXTRA OVERRIDES]

--keep-only-kernels (with --skip-build and the tag of an earlier call): the jobs start from
what that call's jobs built, nothing else of its cache: an image that built only what this job
calls.

--skip-build with a new --tag: the jobs start from an empty kernel cache of their own
(qcache-NAME), as on a machine whose image never ran `kernels build`: each job then builds what
it calls in a child process beside its work (`hardware.background_builds`, on by default), or
in line with `hardware.background_builds=false` among the overrides. The pair that measures it,
on one machine:

    python3 benchmarks/cold_start.py --tokenizer DIR --work /tmp/cold --out bg.json --skip-build \
        --tag bg --runs 1
    python3 benchmarks/cold_start.py --tokenizer DIR --work /tmp/cold --out inline.json \
        --skip-build --tag inline --runs 1 -- hardware.background_builds=false

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
import shutil
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


# what the job quantizes: GPTQ w4 g128 through gptqmodel, the method's other settings as shipped
METHOD = ["method=gptq", "method.backend=gptqmodel", "bits=w4", "bits.group_size=128"]


def job_args(a, model_dir: Path, cache: Path, out: Path) -> list:
    return [*METHOD,
            "model=local", f"model.path={model_dir}", "calibration=local",
            f"calibration.path={TEXT}", f"calibration.num_samples={a.samples}",
            f"calibration.seq_len={a.seq_len}", f"hardware={a.hardware}",
            f"cache.dir={cache}", f"hydra.run.dir={out}",
            "recipe_name=cold_start", *a.extra]


def cold_builds(hardware: str = "h100_80gb", cc=None) -> tuple:
    """The JIT builds the job calls on `hardware` as shipped, in qrecipe's build order: GPTQ's
    quantize build and the extensions of the kernel `auto` reloads its checkpoint with (qrecipe's
    own resolution, by the measured table, in the profile's dtype); cc None: the newest measured
    GPU's. What a machine image built with `qrecipe kernels build` holds for it."""
    from qrecipe.kernels import build
    from qrecipe.kernels import table as kernels
    from qrecipe.recipes.compose import compose
    cfg = compose([*METHOD, f"hardware={hardware}"])
    hw, allow_jit = cfg.hardware, bool(cfg.hardware.allow_jit)
    k = kernels.resolve("gptq", "cuda", str(hw.kernel), allow_jit, cc=cc, dtype=str(hw.dtype),
                        sym=bool(cfg.method.sym), bits=int(cfg.bits.width),
                        group_size=int(cfg.bits.group_size))
    names = set(build.QUANTIZE["gptq"] if allow_jit else ()) | {
        e.name for e in build.extensions_of("gptq", k.name) if e.dtype in (None, str(hw.dtype))}
    return tuple(e.name for e in build.EXTENSIONS if e.name in names)


def timed(cmd: list, log: Path, env: dict) -> tuple:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0


def one_job(a, model_dir: Path, cache: Path, work: Path, n: int, env: dict) -> dict:
    name = f"run{n}{'-' + a.tag if a.tag else ''}"
    out, log = work / name, work / f"{name}.log"
    rc, wall = timed([sys.executable, "-m", "qrecipe", *job_args(a, model_dir, cache, out)],
                     log, env)
    row = {"run": n, "tag": a.tag, "rc": rc, "wall_s": round(wall, 2)}
    if rc or not (out / "metrics.json").is_file():
        row["log_tail"] = log.read_text()[-2000:]
        return row
    lib = out / "library.log"
    m = json.loads((out / "metrics.json").read_text())
    d = m.get("quantize_details") or {}
    per = [r["seconds"] for r in m.get("per_layer") or []]
    row.update(stages_s=m.get("time_s"), overhead=m.get("overhead"),
               kernel=(m.get("kernel") or {}).get("resolved"),
               per_layer=per, first_layer_s=per[0] if per else None,
               per_layer_median_s=sorted(per)[len(per) // 2] if per else None,
               gptq_cuda_block_update=d.get("gptq_cuda_block_update"),
               eval={k: v for k, v in (m.get("eval") or {}).items() if k != "protocol"},
               kernel_builds=m.get("kernel_builds"),
               # gptqmodel's line for each compile, the job's and its background child's
               compiles=(lib.read_text(errors="replace").count("compiling torch.ops JIT "
                                                                "extension")
                         if lib.is_file() else None))
    return row


def table(doc: dict) -> str:
    out = [f"kernels build: {doc['build'].get('wall_s')} s wall" if doc.get("build")
           else "kernels build: skipped", "",
           "| run | wall s | stages s | first layer s | per layer s (median) | own share "
           "| kernel | compiles | background builds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        st = ", ".join(f"{k} {v:.1f}" for k, v in (r.get("stages_s") or {}).items()
                       if isinstance(v, (int, float)))
        own = (r.get("overhead") or {}).get("qrecipe_own_share")
        bg = ", ".join(f"{k['name']} {k['status']} {k.get('seconds')} s" for k in
                       (r.get("kernel_builds") or {}).get("kernels", []))
        out.append(f"| {r['run']}{r.get('tag') or ''} | {r['wall_s']} | {st} | "
                   f"{r.get('first_layer_s')} | {r.get('per_layer_median_s')} | {own} | "
                   f"{r.get('kernel')} | {r.get('compiles')} | {bg} |")
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
    ap.add_argument("--tag", default="", help="names the run folders and, with --skip-build, "
                    "an empty kernel and fp-baseline cache of their own")
    ap.add_argument("--keep-only-kernels", action="store_true",
                    help="with --skip-build: first empty the tag's cache except the kernels an "
                         "earlier run of the tag built (no fp baseline, no cached inputs)")
    ap.add_argument("extra", nargs="*", help="more overrides of the job")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "fp16"
    cache = work / (f"qcache-{a.tag}" if a.tag and a.skip_build else "qcache")
    if not (model_dir / "config.json").exists():
        subprocess.run([sys.executable, str(HERE / "random_llama.py"), str(model_dir),
                        "--tokenizer", a.tokenizer, "--shape", a.shape, "--layers",
                        str(a.layers)], check=True)
    if a.keep_only_kernels and cache.is_dir():
        for p in cache.iterdir():
            if p.name != "kernels":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
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
    first = 1  # a later call with the same tag numbers its runs on (never overwrites one)
    while (work / f"run{first}{'-' + a.tag if a.tag else ''}").exists():
        first += 1
    for n in range(first, first + a.runs):
        doc["runs"].append(one_job(a, model_dir, cache, work, n, env))
        print(json.dumps({k: v for k, v in doc["runs"][-1].items() if k != "overhead"}),
              flush=True)
        Path(a.out).write_text(json.dumps(doc, indent=1, default=str))
    print(table(doc))


if __name__ == "__main__":
    main()
