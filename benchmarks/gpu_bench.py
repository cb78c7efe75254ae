"""Side by side on one GPU: qrecipe against each backend's own API with its defaults, same model,
same calibration rows; then reload + speed of every checkpoint format per kernel, against fp16.

    python benchmarks/gpu_bench.py --tokenizer DIR --work /tmp/bench --out results.json \
        [--shape llama2-7b] [--layers 1] [--samples 64] [--seq-len 512] [--budget 570]
        [--only gptq-gptqmodel,speed] [--ext-dir DIR] [--set KEY=VALUE --tag NAME]

Without --only: the original set (JOBS: gptq, awq, rtn, bnb and their reload), as before. The
newer methods (NEW_JOBS: fp8, w8a8, autoround, hqq, nvfp4, mxfp4; each qrecipe's job and its
library's default, then the reload of qrecipe's checkpoints) run only when --only names them:

    python benchmarks/gpu_bench.py --tokenizer DIR --work /tmp/bench --out new.json \
        --layers 32 --samples 128 --seq-len 512 --budget 540 \
        --only fp8,w8a8,autoround,hqq,nvfp4,mxfp4,speed

The GPU goals on the 32-layer shape in one invocation (the last table, "goal"; after the
image step COLD_DOC names):

    python3 -m compileall -q -j 16 SITE_PACKAGES
    python benchmarks/gpu_bench.py --tokenizer DIR --work /tmp/goals --out goals.json \
        --layers 32 --samples 128 --seq-len 512 --budget 700 \
        --only cold,gptq-gptqmodel,awq-llmcompressor,speed

the cold GPTQ job first (`cold`, opt-in: the default set leaves it out), GPTQ against
GPTQModel's defaults, AWQ through llm-compressor against its defaults, the reload and decode of
qrecipe's checkpoints. On H100s it took 434-550 s in all (docs/benchmarks.md, "the 32-layer 7B
shape in one run"), model writing and the JIT builds included.

--set adds an override to every qrecipe job of the invocation (e.g. hardware.dtype=bfloat16:
qrecipe's jobs run in float16 otherwise, as the libraries' defaults load this model); --tag
names the variant in the jobs' folders and rows, so several invocations share one --work.

--only takes label prefixes (method-backend-runner: `fp8`, `hqq-hqq-qrecipe`, `speed`); naming a
newer method runs the newer group's order and its speed step. At 32 layers (128 x 512 rows) the
whole newer group takes about 25 minutes (13 processes of ~20 s start-up each, ~5 min of
reloads): past one 10-minute command. Three commands of under 10 minutes each, back to back with
the same --work (a warm machine keeps the 32-layer model, ~1.5 min to write, and the rows):

    --only fp8,mxfp4,nvfp4,speed      --only w8a8,hqq,speed      --only autoround,speed

each with `--layers 32 --samples 128 --seq-len 512 --budget 520` and its own --out;
`python benchmarks/gpu_bench_table.py A.json B.json C.json` prints the three.

One invocation, made to fit one 10-minute device command: builds a Llama-shaped random fp16 model
(benchmarks/random_llama.py; never for quality claims), cuts the calibration rows once with
qrecipe's own sampler, queues the one-time gptqmodel JIT builds in a background process (each
timed: the "cold" cost), and runs every job in a fresh process (gpu_bench_jobs.py) once the builds
it uses are done (so its time is the warm one; cold = warm + its builds). Jobs that need no build
run first, while the builds compile. Reload + speed of every checkpoint runs in one process at the
end, beside the fp16 model with and without its GEMMs (the floor of a decode step, from which
the goal table gives each decode's ceiling: gpu_bench_table.decode_floor). Jobs past --budget
seconds are skipped (recorded). Prints markdown tables and writes JSON;
`python benchmarks/gpu_bench_table.py FILE.json` prints them again. Definitions: gpu_bench_table.py.
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
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from gpu_bench_jobs import NO_GEMM, TEXT
from gpu_bench_table import ckpt_label, derive, markdown

# (method, backend, runner, JIT builds it waits for); the order puts build-free jobs first, but
# the cold job: the first job on the machine, once the kernels it calls are built (COLD_DOC)
JOBS = [
    ("cold", "gptqmodel", "cli", ()),  # its builds: _cold_builds (qrecipe's own resolution)
    ("gptq", "llmcompressor", "backend_default", ()),
    ("gptq", "llmcompressor", "qrecipe", ()),
    ("bnb4", "bitsandbytes", "qrecipe", ()),
    ("bnb8", "bitsandbytes", "qrecipe", ()),
    ("awq", "gptqmodel", "qrecipe", ()),
    ("gptq", "gptqmodel", "backend_default", ("gptq_block", "pack_block_cpu")),
    ("gptq", "gptqmodel", "qrecipe", ("gptq_block",)),
    ("rtn", "gptqmodel", "qrecipe", ()),
    ("awq", "gptqmodel", "backend_default", ("awq",)),
    ("awq", "llmcompressor", "qrecipe", ()),
    ("speed", None, None, None),  # waits for the builds its kernels need (speed_builds)
    # after the speed table: rows whose checkpoints are not reloaded (skipped past --budget)
    ("bnb4", "bitsandbytes", "backend_default", ()),
    ("bnb8", "bitsandbytes", "backend_default", ()),
    ("awq", "llmcompressor", "backend_default", ()),
]
# The newer methods, run only when --only names them (old invocations keep their meaning).
# Build-free first, each qrecipe job beside its library's default: the data-free and quick
# llm-compressor presets (fp8, mxfp4), the calibrated ones (nvfp4, w8a8), hqq, then AutoRound
# (its int4 checkpoint's kernels need the JIT builds, which compile meanwhile); the reload of
# qrecipe's checkpoints before the longest default job (AutoRound with torch.compile), which
# --budget cuts first.
NEW_JOBS = [
    ("fp8", "llmcompressor", "qrecipe", ()),
    ("fp8", "llmcompressor", "backend_default", ()),
    ("mxfp4", "llmcompressor", "qrecipe", ()),
    ("mxfp4", "llmcompressor", "backend_default", ()),
    ("nvfp4", "llmcompressor", "qrecipe", ()),
    ("nvfp4", "llmcompressor", "backend_default", ()),
    ("w8a8", "llmcompressor", "qrecipe", ()),
    ("w8a8", "llmcompressor", "backend_default", ()),
    ("hqq", "hqq", "qrecipe", ()),
    ("hqq", "hqq", "backend_default", ()),
    ("autoround", "llmcompressor", "qrecipe", ()),
    ("speed", None, None, None),
    ("autoround", "llmcompressor", "backend_default", ()),
]
PREBUILD = ("gptq_block", "pack_block_cpu", "awq", "exllamav2", "marlin_fp16",  # order of need
            "marlin_bf16")
# compressed-tensors checkpoints whose scheme quantizes activations or stores float weights
# (FP8, INT8 W8A8, NVFP4, MXFP4): a kind of their own, since qrecipe runs them on `emulated`
# only (never on the int kernels, so they wait for no build) and FP8 on transformers' own kernel
EMULATED = "compressed-tensors/emulated"
# Kernels whose reload + speed is measured, per checkpoint format or kind (qrecipe/kernels/table.py
# names). gptq: qrecipe's default is asymmetric, which gptqmodel's GPTQ Marlin refuses and AWQ
# Marlin runs once the checkpoint is rewritten into the AWQ layout (awq_marlin)
SPEED_KERNELS = {"gptq": ("torch", "awq_marlin", "exllama_v2"), "awq": ("torch", "marlin"),
                 "compressed-tensors": ("compressed", "dequantized", "awq_marlin", "exllama_v2"),
                 "bitsandbytes": ("bitsandbytes",), "hqq": ("torch", "dequantized"),
                 EMULATED: ("emulated", "fp8")}
# (method, backend) -> the checkpoint format (qrecipe/kernels/table.py FORMATS) or kind written
FORMAT = {("gptq", "gptqmodel"): "gptq", ("rtn", "gptqmodel"): "gptq",
          ("awq", "gptqmodel"): "awq", ("gptq", "llmcompressor"): "compressed-tensors",
          ("awq", "llmcompressor"): "compressed-tensors",
          ("bnb4", "bitsandbytes"): "bitsandbytes", ("bnb8", "bitsandbytes"): "bitsandbytes",
          # AutoRound writes int weight-only pack-quantized: the int kernels (a build)
          ("autoround", "llmcompressor"): "compressed-tensors", ("hqq", "hqq"): "hqq",
          **{(m, "llmcompressor"): EMULATED for m in ("fp8", "w8a8", "nvfp4", "mxfp4")}}


def fmt_of(kind: str) -> str:
    """The checkpoint format of a FORMAT value (qrecipe's kernel table takes formats)."""
    return kind.split("/")[0]


def _label(method, backend, runner) -> str:
    return "speed" if method == "speed" else f"{method}-{backend}-{runner}"


def selected(a) -> list:
    """The jobs --only names (label prefixes): JOBS by default. Naming a newer method
    (NEW_JOBS) runs the newer group in its order, with its one speed step, after any JOBS named."""
    only = [o for o in a.only.split(",") if o]
    if not only:
        return [j for j in JOBS if j[0] != "cold"]  # the cold job only where --only names it

    def pick(jobs):
        return [j for j in jobs if any(_label(*j[:3]).startswith(o) for o in only)]
    old, new = pick(JOBS), pick(NEW_JOBS)
    if not any(j[0] != "speed" for j in new):
        return old
    return [j for j in old if j[0] != "speed"] + new


def _builds(jobs) -> tuple:
    """The builds these jobs wait for: the cold job's first, then the rest in PREBUILD order; a
    partial run builds nothing else (an unused nvcc build would take the CPU from the timed
    jobs)."""
    need = {e for j in jobs if j[0] != "speed" for e in j[3]}
    if any(j[0] == "speed" for j in jobs):
        need |= set(speed_builds(jobs))
    first = _cold_builds(jobs)
    return first + tuple(e for e in PREBUILD if e in need and e not in first)


def _cold_builds(jobs) -> tuple:
    """The builds the cold job needs (the image step's kernels); the queue holds the others until
    that job is done, so no nvcc build shares the CPU with it."""
    if not any(j[0] == "cold" for j in jobs):
        return ()
    from cold_start import cold_builds
    return cold_builds()


# the JIT build each compiled reload kernel needs (gptqmodel extension names)
KERNEL_BUILD = {"marlin": "marlin_fp16", "awq_marlin": "marlin_fp16", "exllama_v2": "exllamav2"}


def speed_builds(jobs) -> tuple:
    """The builds the speed step may need: those of every kernel it can try on the formats the
    selected qrecipe jobs write (auto's compiled choices and SPEED_KERNELS)."""
    from qrecipe.kernels import table as kernels
    kinds = {FORMAT[(m, b)] for m, b, r, _ in jobs if r == "qrecipe"}
    names = {k for f in kinds for k in SPEED_KERNELS[f]
             + (() if f == EMULATED else kernels.auto_jit(f))}
    return tuple(e for e in PREBUILD if e in {KERNEL_BUILD[k] for k in names
                                                if k in KERNEL_BUILD})


def _spec_files(work: Path, name: str):
    return work / f"{name}.spec.json", work / f"{name}.result.json", work / f"{name}.log"


def start_child(spec: dict, work: Path, env: dict) -> tuple:
    sp, rp, lp = _spec_files(work, spec["name"])
    sp.write_text(json.dumps({**spec, "result": str(rp)}))
    rp.unlink(missing_ok=True)
    with open(lp, "w") as log:  # the child holds its own handle
        p = subprocess.Popen([sys.executable, "-c",
                              "import sys, gpu_bench_jobs as j; j.child(sys.argv[1])", str(sp)],
                             cwd=str(HERE), env={**os.environ, **env}, stdout=log,
                             stderr=subprocess.STDOUT)
    return p, time.perf_counter()


def finish_child(name: str, proc, t0: float, work: Path, timeout: float) -> dict:
    _, rp, lp = _spec_files(work, name)
    try:
        rc = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "timeout"
    proc_s = time.perf_counter() - t0
    if rc == 0 and rp.exists():
        return {**json.loads(rp.read_text()), "process_s": proc_s}
    return {"error": f"rc={rc}", "log_tail": lp.read_text()[-1500:], "process_s": proc_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--work", default="/tmp/gpu_bench")
    ap.add_argument("--out", default="gpu_bench.json")
    ap.add_argument("--shape", default="llama2-7b")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--budget", type=float, default=570, help="skip jobs that start later (s)")
    ap.add_argument("--build-jobs", type=int, default=10, help="nvcc jobs of the background build")
    ap.add_argument("--only", default="", help="comma-separated job label prefixes to run "
                    "(e.g. gptq-gptqmodel,speed, or fp8,w8a8,autoround,hqq,nvfp4,mxfp4,speed "
                    "for the newer methods); default: the original set (JOBS)")
    ap.add_argument("--ext-dir", default=None, help="gptqmodel's extension cache (default: "
                    "WORK/ext); another run's keeps its builds warm")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of every qrecipe job (repeatable), e.g. "
                         "hardware.calib_batch_size=8; the jobs' folders and the JSON rows carry "
                         "--tag")
    ap.add_argument("--tag", default="", help="suffix of the jobs' labels (with --set)")
    a = ap.parse_args()
    if a.set and not a.tag:
        ap.error("--set needs --tag (a finished job's folder is never written again)")
    t_start = time.perf_counter()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    env = job_env(work, a.ext_dir)
    jobs = selected(a)
    builds = BuildQueue(work, {**env, "MAX_JOBS": str(a.build_jobs)}, _builds(jobs),
                        _cold_builds(jobs))
    model_dir, rows_path = work / "fp16", work / "rows.pt"
    doc = setup(a, model_dir, rows_path, work)
    out_json = Path(a.out)

    def save():
        doc["total_s"] = round(time.perf_counter() - t_start, 1)
        out_json.write_text(json.dumps(doc, indent=1, default=str))

    def wait_builds(names):
        for e in names:
            r = builds.wait(e)
            if r is not None:
                doc["prebuild"].append({"ext": e, **r})
                print(f"  build {e}: {r.get('build_s', r.get('error'))}", flush=True)

    checkpoints = []  # (method label, format, model dir) of the qrecipe runs
    for method, backend, runner, needs in jobs:
        elapsed = time.perf_counter() - t_start
        label = _label(method, backend, runner)
        if elapsed > a.budget:
            doc["skipped"].append(label)
            builds.go.set()
            continue
        wait_builds(speed_builds(jobs) if method == "speed" else needs)
        print(f"[{time.perf_counter() - t_start:5.0f}s] {label} ...", flush=True)
        if method == "cold":
            try:
                doc["rows"].append(cold_job(a, model_dir, work, env))
            finally:  # the other builds go on whatever became of the job
                builds.go.set()
            save()
            continue
        if method == "speed":
            doc["speed"] = speed(checkpoints, model_dir, rows_path, work, env,
                                 a.budget + 45 - (time.perf_counter() - t_start),
                                 doc["device_cc"])
            save()
            continue
        name = f"{label}-{a.tag}" if a.tag else label
        spec = {"name": name, "method": method, "backend": backend, "runner": runner,
                "model": str(model_dir), "rows": str(rows_path), "samples": a.samples,
                "seq_len": a.seq_len, "layers": a.layers, "qcache": str(work / "qcache"),
                "out": str(work / "out" / name), "overrides": list(a.set)}
        proc, t0 = start_child(spec, work, env)
        r = finish_child(name, proc, t0, work, a.budget + 25 - (time.perf_counter() - t_start))
        row = {"method": method, "backend": backend, "runner": runner, **r}
        if a.tag:
            row["tag"] = a.tag
        if a.set and runner == "qrecipe":  # the libraries' own jobs take no overrides
            row["set"] = list(a.set)
        if "model_dir" in r:
            row["disk_bytes"] = sum(f.stat().st_size for f in Path(r["model_dir"]).rglob("*")
                                    if f.is_file())
            if runner == "qrecipe":
                checkpoints.append((ckpt_label(method, backend), FORMAT[(method, backend)],
                                    r["model_dir"]))
        if r.get("rows_sha256") and r["rows_sha256"] != doc["calibration"]["rows_sha256"]:
            row["rows_mismatch"] = True
        print("   ", {k: row.get(k) for k in ("process_s", "per_layer", "lib_s", "error")},
              flush=True)
        doc["rows"].append(row)
        save()
    wait_builds(PREBUILD)
    link_reloads(doc)
    derive(doc)
    save()
    print(markdown(doc))


COLD_DOC = """cold: GPTQ w4 g128 through gptqmodel as a user runs it on a fresh machine
(benchmarks/cold_start.py's job: `python -m qrecipe` on h100_80gb as shipped, bfloat16, the
default evaluation), timed from the command's start to its exit; the first job of the invocation,
started once the kernels it calls are built (what `qrecipe kernels build` leaves in a machine
image) and with an empty cache of its own (no fp baseline, no cached inputs); --set does not
apply to it. Run the image's other step, `python -m compileall` of the site-packages, before the
invocation."""


def cold_job(a, model_dir: Path, work: Path, env: dict) -> dict:
    """The cold job's row (COLD_DOC): wall, stages, per-layer and metrics.json's own share."""
    from types import SimpleNamespace

    from cold_start import one_job
    ns = SimpleNamespace(samples=a.samples, seq_len=a.seq_len, hardware="h100_80gb", tag="bench",
                         extra=[])
    n = 1  # another invocation on this --work: a new folder and an empty cache again
    while (work / f"run{n}-bench").exists():
        n += 1
    r = one_job(ns, model_dir, work / f"qcache-cold{n}", work, n, {**os.environ, **env})
    row = {"method": "cold", "backend": "gptqmodel", "runner": "cli", "process_s": r["wall_s"],
           **{k: v for k, v in r.items() if k not in ("run", "tag", "wall_s")}}
    if r["rc"]:
        row["error"] = f"rc={r['rc']}"
    print("   ", {k: row.get(k) for k in ("process_s", "first_layer_s", "error")}, flush=True)
    return row


def job_env(work: Path, ext_dir=None) -> dict:
    """The child processes' environment: one kernel cache for every job (the builds fill it
    once), offline, and qrecipe's cache under the work folder."""
    return {"GPTQMODEL_TORCH_EXTENSIONS_DIR": ext_dir or str(work / "ext"),
            "GPTQMODEL_CACHE_DIR": str(work / "gcache"), "GPTQMODEL_OFFLINE": "1",
            "TRITON_CACHE_DIR": str(work / "triton"), "QRECIPE_CACHE": str(work / "qcache")}


class BuildQueue:
    """The one-time JIT builds, one after another in PREBUILD order (each with --build-jobs nvcc
    jobs, so several cores stay free for the timed jobs), in a background thread; wait(name)
    returns a build's result once, when it is done."""

    def __init__(self, work: Path, env: dict, names=PREBUILD, first=()):
        import threading
        self.names, self.first = tuple(names), tuple(first)
        self.results, self.events = {}, {e: threading.Event() for e in self.names}
        self._given = set()
        self.go = threading.Event()  # set: build past `first` (the cold job is done)
        if not self.first:
            self.go.set()
        threading.Thread(target=self._run, args=(work, env), daemon=True).start()

    def _run(self, work, env):
        for e in self.names:
            if e not in self.first:
                self.go.wait()
            proc, t0 = start_child({"name": f"build-{e}", "runner": "prebuild", "ext": e},
                                   work, env)
            self.results[e] = finish_child(f"build-{e}", proc, t0, work, 900)
            self.events[e].set()

    def wait(self, name):
        if name not in self.events or name in self._given:
            return None
        self.events[name].wait()
        self._given.add(name)
        return self.results[name]


def speed(checkpoints, model_dir, rows_path, work, env, timeout, cc) -> list:
    targets = speed_targets(checkpoints, model_dir, cc)
    proc, t0 = start_child({"name": "speed", "runner": "speed", "targets": targets,
                            "rows": str(rows_path)}, work, env)
    r = finish_child("speed", proc, t0, work, timeout)
    if "targets" in r:
        return r["targets"]
    part = work / "speed.result.json.partial"  # the targets done before a crash or the limit
    done = json.loads(part.read_text()) if part.exists() else []
    return done + [{"method": m, "kernel": k, "error": r.get("error")}
                   for m, k, _ in targets[len(done):]]


def speed_targets(checkpoints, model_dir, cc) -> list:
    """fp16, fp16 without its GEMMs (the floor of a decode step), then every checkpoint with
    the kernel qrecipe's `auto` picks (the reload column: a time limit cuts the extra kernels
    first), then transformers' FP8 kernel (the Hopper speed an FP8 checkpoint can have), then
    its other kernels. checkpoints: (label, FORMAT value, directory)."""
    targets, extra = [("fp16", "fp16", str(model_dir)), ("fp16", NO_GEMM, str(model_dir))], []
    for m, kind, d in checkpoints:
        auto = auto_kernel(kind, d, cc)
        targets.append((m, auto, d))
        # rtn writes the gptq format: its reload is checked with the one kernel auto picks
        extra += [(m, k, d) for k in SPEED_KERNELS[kind] if k != auto and m != "rtn"
                  and fits(kind, k, d, cc)]
    return targets + sorted(extra, key=lambda t: t[1] != "fp8")  # stable: the rest in order


def _saved(model_dir) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text()).get(
        "quantization_config", {})


def _resolve(kind: str, kernel: str, model_dir, cc: float):
    """qrecipe's kernel choice for this checkpoint on this GPU, as the h100_80gb profile makes
    it (allow_jit on)."""
    from qrecipe.kernels import table as kernels
    fmt = fmt_of(kind)
    return kernels.resolve(fmt, "cuda", kernel, True, cc=cc,
                           **kernels.saved_facts(fmt, _saved(model_dir)))


def fits(kind: str, kernel: str, model_dir, cc: float) -> bool:
    """Whether kernel runs this checkpoint here (qrecipe's own check)."""
    from qrecipe.errors import QRecipeError
    try:
        _resolve(kind, kernel, model_dir, cc)
        return True
    except QRecipeError:
        return False


def auto_kernel(kind: str, model_dir, cc: float) -> str:
    """The kernel qrecipe's `auto` picks; asymmetric GPTQ rules Marlin out (qrecipe/kernels/table.py)."""
    return _resolve(kind, "auto", model_dir, cc).name


def link_reloads(doc) -> None:
    """Each qrecipe row gets its checkpoint's reload result with the kernel `auto` picks."""
    for row in doc["rows"]:
        if row["runner"] != "qrecipe" or "error" in row:
            continue
        auto = auto_kernel(FORMAT[(row["method"], row["backend"])], row["model_dir"],
                           doc["device_cc"])
        label = ckpt_label(row["method"], row["backend"])
        s = next((s for s in doc.get("speed", []) if s["method"] == label
                  and s["kernel"] == auto), None)
        row["kernel"] = auto
        if s:
            row["reload"] = "ok" if s.get("reload_ok") else f"failed: {s.get('error')}"


def setup(a, model_dir: Path, rows_path: Path, work: Path) -> dict:
    import torch
    from random_llama import SHAPES
    if not (model_dir / "config.json").exists():
        subprocess.run([sys.executable, str(HERE / "random_llama.py"), str(model_dir),
                        "--tokenizer", a.tokenizer, "--shape", a.shape, "--layers",
                        str(a.layers)], check=True)
    hidden, inter, heads, kv = SHAPES[a.shape]
    return {"device": torch.cuda.get_device_name(),
            "device_cc": float("{}.{}".format(*torch.cuda.get_device_capability())),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "versions": _versions(),
            "command": " ".join([Path(sys.executable).name] + sys.argv),
            "shape": {"name": a.shape, "hidden": hidden, "intermediate": inter,
                      "layers": a.layers, "heads": heads, "kv_heads": kv,
                      "vocab": json.loads((model_dir / "config.json").read_text())["vocab_size"]},
            "calibration": {"num_samples": a.samples, "seq_len": a.seq_len, "text": TEXT,
                            "rows_sha256": _rows(model_dir, a, rows_path, work)},
            "rows": [], "speed": [], "prebuild": [], "skipped": []}


def _rows(model_dir: Path, a, rows_path: Path, work: Path) -> str:
    """The rows a qrecipe run with the same settings cuts (qrecipe's own sampler), saved for the
    backend-default jobs."""
    import torch
    from omegaconf import OmegaConf

    from qrecipe.inputs import texts as data
    from qrecipe.inputs.models import load_tokenizer
    from qrecipe.record.cache import Cache
    from qrecipe.record.fingerprint import hash_files

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
              "bitsandbytes", "triton", "optimum", "hqq", "auto-round"):
        try:
            out[d] = version(d)
        except PackageNotFoundError:
            out[d] = None
    import torch
    out["cuda"] = torch.version.cuda
    return out


if __name__ == "__main__":
    main()
