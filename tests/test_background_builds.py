"""A CUDA job's background kernel builds on the CPU (issue 27, point 3): which compiled kernels a
job will call (quantizing's, then the one its reload resolves to), which of them the cache
lacks, the child's protocol (one JSON line per kernel, its own process group, stopped when the
job no longer needs it) and the runner's part (the log line, nothing on CPU or without
allow_jit). The child really builds on a GPU: tests/test_kernels_build_gpu.py (marked gpu)."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import compose

from qrecipe.kernels import background, build, measured
from qrecipe.run import builds as run_builds
from qrecipe.run.validate import validate

ROOT = Path(__file__).resolve().parents[1]
H100 = 9.0


@pytest.fixture(autouse=True)
def no_measured_table(monkeypatch):
    """auto's fixed order: what the kernel table says is tested in test_kernels_measured.py."""
    monkeypatch.setattr(measured, "table", lambda: {"source": {}, "rows": []})


def _needed(fmt="gptq", method="gptq", reload=True, allow_jit=True, kernel="auto", cc=H100,
            dtype="bfloat16", **facts):
    facts = {"sym": False, "bits": 4, "group_size": 128, **facts}
    return [(j.ext.name, j.uses) for j in background.needed(fmt, method, reload, allow_jit,
                                                             kernel, cc, facts, dtype)]


def test_gptq_builds_its_block_update_then_the_reload_kernel_it_resolves_to():
    assert _needed() == [("gptq_block", ("quantize gptq",)),
                         ("exllamav2", ("reload gptq exllama_v2",))]  # asymmetric: ExLlamaV2
    # symmetric: Marlin, only the build of the reload's dtype
    assert _needed(sym=True, dtype="float16") == [("gptq_block", ("quantize gptq",)),
                                                  ("marlin_fp16", ("reload gptq marlin",))]
    assert _needed(sym=True, kernel="exllama_v2")[1:] == [
        ("exllamav2", ("reload gptq exllama_v2",))]  # a named kernel is the one built


def test_only_what_the_job_calls():
    assert _needed(method="rtn") == [("exllamav2", ("reload gptq exllama_v2",))]  # no Hessian
    assert _needed(method=None) == [("exllamav2", ("reload gptq exllama_v2",))]  # reused model
    assert _needed(reload=False) == [("gptq_block", ("quantize gptq",))]  # eval off
    assert _needed(allow_jit=False) == []
    assert _needed(kernel="torch") == [("gptq_block", ("quantize gptq",))]  # no compiled reload
    assert _needed(cc=7.5) == [("gptq_block", ("quantize gptq",))]  # auto builds no reload <8.0
    # a named kernel the checkpoint cannot take: the reload refuses it itself, nothing is built
    assert _needed(kernel="marlin") == [("gptq_block", ("quantize gptq",))]


def test_other_formats():
    assert _needed(fmt="awq", method="awq", sym=True, dtype="float16") == [
        ("marlin_fp16", ("reload awq marlin",))]  # AWQ quantizing builds nothing
    ct = _needed(fmt="compressed-tensors", method="gptq")
    assert ct == [("exllamav2", ("reload compressed-tensors exllama_v2",))]
    assert _needed(fmt="compressed-tensors", method="w8a8", bits=8, group_size=-1,
                   emulated=True, convertible=False) == []
    assert _needed(fmt="bitsandbytes", method="bnb") == []


def _fake_build(root: Path, name: str) -> None:
    e = build.BY_NAME[name]
    lib = root / e.subdir / "0123456789abcdef" / f"{e.binary}.so"
    lib.parent.mkdir(parents=True, exist_ok=True)
    lib.write_bytes(b"\x7fELF")


def test_missing_leaves_out_what_the_cache_holds(tmp_path):
    jobs = background.needed("gptq", "gptq", True, True, "auto", H100,
                             {"sym": False, "bits": 4, "group_size": 128}, "bfloat16")
    assert [j.ext.name for j in background.missing(jobs, tmp_path)] == ["gptq_block", "exllamav2"]
    _fake_build(tmp_path, "gptq_block")
    assert [j.ext.name for j in background.missing(jobs, tmp_path)] == ["exllamav2"]


def test_run_reports_each_kernel_as_it_is_done(tmp_path):
    """The child's loop: built (a library appeared), already built, failed with gptqmodel's
    reason; one line each, flushed at once (the job reads them when it ends)."""
    _fake_build(tmp_path, "exllamav2")
    lines = []

    class Results(io.StringIO):
        def flush(self):
            lines.append(self.getvalue().count("\n"))

    def call(ext):
        if ext.name == "gptq_block":
            _fake_build(tmp_path, "gptq_block")
        if ext.name in ("gptq_block", "exllamav2"):  # exllamav2: loaded from the cache
            return True, ""
        return False, "nvcc not found"

    out = Results()
    rc = background.run(["gptq_block", "exllamav2", "marlin_fp16"], tmp_path, out, call)
    rows = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert [(r["name"], r["status"]) for r in rows] == [
        ("gptq_block", "built"), ("exllamav2", "already built"), ("marlin_fp16", "failed")]
    assert rows[2]["reason"] == "nvcc not found" and rc == 1
    assert lines == [1, 2, 3]


def _child(script: str, jobs=("gptq_block", "exllamav2")) -> background.Child:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    return background.Child(proc, tuple(build.Job(build.BY_NAME[n], (f"use {n}",))
                                        for n in jobs))


def test_finish_collects_a_finished_child():
    c = _child("""
        import json
        print("a library's line on stdout")
        print(json.dumps({"name": "gptq_block", "status": "built", "seconds": 21.5,
                          "reason": ""}))
        print(json.dumps({"name": "exllamav2", "status": "failed", "seconds": 3.0,
                          "reason": "no nvcc"}))
        raise SystemExit(1)
    """)
    c.proc.wait(30)
    r = c.finish()
    assert r["stopped"] is False and r["exit_code"] == 1
    assert r["kernels"] == [
        {"name": "gptq_block", "uses": "use gptq_block", "status": "built", "seconds": 21.5,
         "reason": ""},
        {"name": "exllamav2", "uses": "use exllamav2", "status": "failed", "seconds": 3.0,
         "reason": "no nvcc"}]


def _wait_reported(c: background.Child, n: int) -> None:
    deadline = time.time() + 30
    while len(c.reported()) < n:
        assert time.time() < deadline, c.lines
        time.sleep(0.05)


def test_finish_lets_a_child_that_reported_everything_exit_on_its_own():
    """Seen on an H100: the job, which had waited on the last build's lock, ended while the
    child was still tearing down its interpreter, and stopped it (exit -15, "stopped")."""
    c = _child("""
        import json, time
        for n in ("gptq_block", "exllamav2"):
            print(json.dumps({"name": n, "status": "built", "seconds": 1.0, "reason": ""}),
                  flush=True)
        time.sleep(1.5)  # the interpreter's teardown
    """)
    _wait_reported(c, 2)
    assert c.proc.poll() is None  # still exiting
    r = c.finish()
    assert r["stopped"] is False and r["exit_code"] == 0, r
    assert [k["status"] for k in r["kernels"]] == ["built", "built"]


def test_finish_stops_a_child_that_reported_everything_but_does_not_exit(monkeypatch):
    monkeypatch.setattr(background, "EXIT_GRACE_S", 0.5)
    c = _child("""
        import json, time
        for n in ("gptq_block", "exllamav2"):
            print(json.dumps({"name": n, "status": "built", "seconds": 1.0, "reason": ""}),
                  flush=True)
        time.sleep(60)
    """)
    _wait_reported(c, 2)
    t0 = time.perf_counter()
    r = c.finish()
    assert 0.4 < time.perf_counter() - t0 < background.STOP_GRACE_S
    assert r["stopped"] is True and r["exit_code"] == -15, r
    assert [k["status"] for k in r["kernels"]] == ["built", "built"]


def test_finish_stops_a_child_still_building_and_its_process_group(tmp_path):
    """What it reported stays; the rest is "not built"; a grandchild (nvcc under ninja) goes
    with it."""
    pidfile = tmp_path / "grandchild.pid"
    c = _child(f"""
        import json, subprocess, sys, time
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(g.pid))
        print(json.dumps({{"name": "gptq_block", "status": "built", "seconds": 1.0,
                           "reason": ""}}), flush=True)
        time.sleep(60)
    """)
    deadline = time.time() + 30
    while not pidfile.is_file() or not pidfile.read_text():
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    t0 = time.perf_counter()
    r = c.finish()
    assert time.perf_counter() - t0 < background.STOP_GRACE_S
    assert r["stopped"] is True and r["exit_code"] != 0
    assert [(k["name"], k["status"]) for k in r["kernels"]] == [
        ("gptq_block", "built"), ("exllamav2", "not built")]
    grandchild = int(pidfile.read_text())
    for _ in range(100):  # reaped by init once killed; gone from the process table
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"grandchild {grandchild} still alive")


def test_the_child_entry_point_reports_a_failed_build_without_a_gpu(tmp_path):
    """`python -m qrecipe.kernels.background NAME`: gptqmodel's own builder, no CUDA here, so
    "failed" with its reason on the result pipe, and gptqmodel's chatter on stderr only."""
    pytest.importorskip("gptqmodel")
    env = {**os.environ, "GPTQMODEL_TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"),
           "CUDA_VISIBLE_DEVICES": ""}
    job = build.Job(build.BY_NAME["exllamav2"], ("reload gptq exllama_v2",))
    proc = subprocess.Popen([sys.executable, "-m", "qrecipe.kernels.background", "exllamav2"],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    proc.wait(300)
    r = background.Child(proc, (job,)).finish()
    assert r["exit_code"] == 1 and r["stopped"] is False
    assert [(k["name"], k["status"]) for k in r["kernels"]] == [("exllamav2", "failed")], r


# -- the runner's part --------------------------------------------------------------------------

def _cfg(*extra):
    return compose(["+recipe=gptq_llama7b", "hardware=h100_80gb",
                    "hardware.background_builds=true", *extra])


def _builds(cfg, monkeypatch, tmp_path, caplog, quantize=True):
    started = []
    monkeypatch.setattr(background, "start", lambda jobs: started.append(
        [(j.ext.name, j.uses) for j in jobs]) or None)
    monkeypatch.setattr(run_builds.cuda, "capability", lambda index=0: H100)
    plan = validate(cfg, here=False, hub=False)
    with caplog.at_level(logging.INFO, logger="qrecipe"):
        with run_builds.background_builds(cfg, plan, "bfloat16", quantize, tmp_path) as b:
            assert b.finish() is None  # no child was started (start is a fake here)
    return started


def test_a_cuda_job_with_allow_jit_starts_the_builds_the_cache_lacks(monkeypatch, tmp_path,
                                                                     caplog):
    started = _builds(_cfg(), monkeypatch, tmp_path, caplog)
    assert started == [[("gptq_block", ("quantize gptq",)),
                        ("exllamav2", ("reload gptq exllama_v2",))]]
    assert "kernels: building gptq_block (quantize gptq), exllamav2 (reload gptq exllama_v2) " \
        "in the background: not in the kernel cache yet" in caplog.text
    _fake_build(tmp_path, "gptq_block")
    _fake_build(tmp_path, "exllamav2")
    caplog.clear()
    assert _builds(_cfg(), monkeypatch, tmp_path, caplog) == []  # all in the cache
    assert "in the background" not in caplog.text


@pytest.mark.parametrize("extra", [["hardware.allow_jit=false"],
                                   ["hardware.background_builds=false"],
                                   ["hardware=cpu", "hardware.background_builds=true"]])
def test_no_background_builds(extra, monkeypatch, tmp_path, caplog):
    assert _builds(_cfg(*extra), monkeypatch, tmp_path, caplog) == []


def test_on_by_default_in_the_shipped_gpu_profile(monkeypatch, tmp_path, caplog):
    """Measured on a fresh H100 (docs/benchmarks.md "GPU: a GPTQ job on a machine that never
    built its kernels"): 99.2 s against 127.0 s in line, the same per-layer seconds."""
    cfg = compose(["+recipe=gptq_llama7b", "hardware=h100_80gb"])
    assert cfg.hardware.background_builds is True
    assert [n for n, _ in _builds(cfg, monkeypatch, tmp_path, caplog)[0]] == [
        "gptq_block", "exllamav2"]


def test_a_resumed_job_with_eval_off_builds_nothing(monkeypatch, tmp_path, caplog):
    started = _builds(_cfg("eval.enabled=false"), monkeypatch, tmp_path, caplog,
                      quantize=False)
    assert started == []


def test_builds_finish_logs_one_line(caplog):
    class Fake:
        def finish(self):
            return {"kernels": [{"name": "gptq_block", "status": "built", "seconds": 21.5},
                                {"name": "exllamav2", "status": "not built"}],
                    "wall_s": 30.0, "stopped": True, "exit_code": -15}

    b = run_builds.Builds(Fake())
    with caplog.at_level(logging.INFO, logger="qrecipe"):
        r = b.finish()
        assert b.finish() is r  # collected once
    assert caplog.text.count("kernels: background builds: gptq_block built in 21.5 s, "
                             "exllamav2 not built (stopped: the job no longer needed them)") == 1
