"""`qrecipe kernels build` on a GPU (issue 27, point 3): on a fresh cache it builds each kernel the
h100_80gb profile uses, a second run finds every one built in well under a second, and a GPTQ job
after it (quantize with the block update, reload on ExLlamaV2 with allow_jit) builds nothing.

Marked `gpu`; skipped without CUDA. Self-contained: a tiny random Llama (tests/conftest.py), no
network; the tokenizer from SmolLM2's GGUF or QRECIPE_TEST_TOKENIZER (the GPU machine). About 3
minutes on an H100, nearly all of it nvcc (gptqmodel's reference: GPTQ block update ~20 s,
ExLlamaV2 35 s, Marlin fp16 117 s). `--dtype float16` keeps to the Marlin build this model's
float16 checkpoint would use; without it the bfloat16 one is built too (another 2 minutes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Tuple

import pytest
from conftest import make_random_llama

from qrecipe.kernels import build

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[1]
BUILD = ["kernels", "build", "hardware=h100_80gb", "--dtype", "float16"]
EXPECTED = ["gptq_block", "exllamav2", "marlin_fp16"]


def _env(cache: Path) -> Dict[str, str]:
    """This environment with qrecipe's cache at `cache` and none of gptqmodel's own build-dir
    or rebuild settings: where it builds is configure_jit_cache's choice alone."""
    env = {k: v for k, v in os.environ.items() if not (
        k in ("GPTQMODEL_TORCH_EXTENSIONS_DIR", "GPTQMODEL_CACHE_DIR", "GPTQMODEL_KERNEL_REBUILD")
        or (k.startswith("GPTQMODEL_") and k.endswith(("_BUILD_ROOT", "_FORCE_REBUILD"))))}
    env["QRECIPE_CACHE"] = str(cache)
    return env


def _run(args, env, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _statuses(stdout: str) -> Dict[str, Tuple[str, float]]:
    """name -> (status, seconds) from the command's lines (gptqmodel's own log lines skipped)."""
    out = {}
    for ln in stdout.splitlines():
        name = ln.split(" ", 1)[0]
        if name in build.BY_NAME and " s" in ln:
            rest = ln[len(name):].split()
            status = "already built" if rest[:2] == ["already", "built"] else rest[0]
            out[name] = (status, float(rest[2 if status == "already built" else 1]))
    return out


def _libraries(root: Path) -> Dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*.so"))}


def _find(d, key):
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def _job(model_dir: Path, out: Path, env, *extra: str) -> subprocess.CompletedProcess:
    """A GPTQ w4 job on the profile, allow_jit on, in a fresh interpreter (so that nothing this
    test process loaded counts): quantize (block update) -> save -> reload (ExLlamaV2, a
    compiled kernel that takes this asymmetric checkpoint) -> perplexity."""
    overrides = ["method=gptq", "method.backend=gptqmodel", "bits=w4", "bits.group_size=128",
                 "model=local", f"model.path={model_dir}", "calibration=local",
                 "calibration.num_samples=16", "calibration.seq_len=128", "hardware=h100_80gb",
                 "hardware.dtype=float16", "hardware.kernel=exllama_v2",
                 "hardware.allow_jit=true",
                 "hardware.assign_gpus=false", "eval.max_windows=2", "eval.seq_len=128",
                 "eval.stride=128", "eval.baseline=false", "eval.speed=false", *extra]
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from conftest import compose
        from qrecipe.kernels.build import BY_NAME, _attr
        from qrecipe.run.runner import run_job
        ok = run_job(compose({overrides!r}), Path({str(out)!r})) == "ok"
        # where each extension this job used came from (gptqmodel's TorchOpsJitExtension)
        for name in ("gptq_block", "exllamav2"):
            ext = _attr(BY_NAME[name].handle)
            print("LOADED", name, bool(ext._load_result), ext.base_build_root())
        sys.exit(0 if ok else 1)
    """)
    return _run(["-c", code], env)


def test_build_once_then_already_built_and_a_job_builds_nothing(tmp_path):
    cache = tmp_path / "cache"
    env = _env(cache)
    root = cache / "kernels" / "torch_extensions"

    first = _run(["-m", "qrecipe", *BUILD], env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    st = _statuses(first.stdout)
    assert list(st) == EXPECTED, first.stdout
    assert {s for s, _ in st.values()} == {"built"}, st
    for name in EXPECTED:
        assert build.artefacts(root, build.BY_NAME[name]), name  # the library is in the cache
    libs = _libraries(root)

    second = _run(["-m", "qrecipe", *BUILD], env)
    assert second.returncode == 0, second.stdout + second.stderr
    st2 = _statuses(second.stdout)
    assert list(st2) == EXPECTED and {s for s, _ in st2.values()} == {"already built"}, st2
    # loading the cached library (Marlin's took 1.4 s on a busy H100), never a compile (>= 20 s)
    assert all(secs < 5.0 for _, secs in st2.values()), st2
    assert _libraries(root) == libs

    listed = _run(["-m", "qrecipe", "kernels", "list"], env).stdout.splitlines()
    for name in EXPECTED:  # the IN CACHE column of each of its rows
        assert {ln.split(f" {name} ", 1)[1].strip() for ln in listed if f" {name} " in ln} \
            == {"built"}, name

    model_dir = make_random_llama(tmp_path / "llama", 256, 512, torch.float16)
    out = tmp_path / "run"
    job = _job(model_dir, out, env)
    log = job.stdout + job.stderr
    err = out / "error.json"
    assert job.returncode == 0, log[-4000:] + (err.read_text() if err.is_file() else "")
    loaded = [ln.split() for ln in job.stdout.splitlines() if ln.startswith("LOADED ")]
    assert {(n, ok, Path(d)) for _, n, ok, d in loaded} == {
        ("gptq_block", "True", root / "gptq_block"), ("exllamav2", "True", root / "exllamav2")}
    m = json.loads((out / "metrics.json").read_text())
    assert m["kernel"]["resolved"] == "exllama_v2", m["kernel"]  # a compiled kernel reloaded it
    assert _find(m, "gptq_cuda_block_update") is True  # quantizing used the prebuilt one
    assert "kernel_builds" not in m  # everything was built: no background child


def test_a_job_on_an_empty_cache_builds_what_it_calls_in_the_background_once(tmp_path):
    """No `kernels build` first: the job's child builds the block update and ExLlamaV2 while
    the job imports, loads and quantizes; the job loads the child's libraries (waiting on
    gptqmodel's lock where it got there first) and compiles nothing itself."""
    cache = tmp_path / "cache"
    env = _env(cache)
    root = cache / "kernels" / "torch_extensions"
    model_dir = make_random_llama(tmp_path / "llama", 256, 512, torch.float16)
    out = tmp_path / "run"
    job = _job(model_dir, out, env, "hardware.background_builds=true")
    err = out / "error.json"
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:] + (
        err.read_text() if err.is_file() else "")
    m = json.loads((out / "metrics.json").read_text())
    kb = m["kernel_builds"]
    assert [(k["name"], k["status"]) for k in kb["kernels"]] == [
        ("gptq_block", "built"), ("exllamav2", "built")], kb
    assert kb["stopped"] is False and kb["exit_code"] == 0, kb
    loaded = [ln.split() for ln in job.stdout.splitlines() if ln.startswith("LOADED ")]
    assert {(n, ok, Path(d)) for _, n, ok, d in loaded} == {
        ("gptq_block", "True", root / "gptq_block"), ("exllamav2", "True", root / "exllamav2")}
    assert _find(m, "gptq_cuda_block_update") is True
    assert m["kernel"]["resolved"] == "exllama_v2", m["kernel"]
    for name in ("gptq_block", "exllamav2"):  # one library each: nothing compiled twice
        assert len(build.artefacts(root, build.BY_NAME[name])) == 1, name
    log = (out / "library.log").read_text(errors="replace")
    assert log.count("compiling torch.ops JIT extension") == 2, log[-4000:]

    libs = _libraries(root)
    again = _job(model_dir, tmp_path / "run2", env, "hardware.background_builds=true")
    # the same cache: nothing left to build
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "kernel_builds" not in json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert _libraries(root) == libs, "the job built (or rebuilt) a kernel"
    log2 = (tmp_path / "run2" / "library.log").read_text(errors="replace")
    assert "compiling torch.ops JIT extension" not in log2
