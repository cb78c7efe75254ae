"""Kill and resume on the tiny random Llama (GPTQ via gptqmodel, CPU): a run killed with SIGKILL
while quantizing or stopped with SIGTERM while saving leaves a directory every command sees as
incomplete, `qrecipe resume` finishes it, and the quantized weights' sha256 equals an
uninterrupted run's. A re-run into a complete directory loses nothing; a re-run sweep skips its
complete jobs (which stay in the report) and resumes the unfinished one."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

pytestmark = pytest.mark.e2e

FAULT = str(Path(__file__).with_name("fault_run.py"))


@pytest.fixture(scope="module", autouse=True)
def seal_key(tmp_path_factory):
    """Stage markers are sealed (qrecipe/boundary/sealed.py): every run and resume of this
    module uses the session's key, never the user's."""
    from qrecipe.boundary.sealed import ENV
    old = os.environ.get(ENV)
    os.environ[ENV] = str(tmp_path_factory.getbasetemp() / "seal.key")
    yield
    if old is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = old


def args(tiny, out, *extra):
    return ["model=local", f"model.path={tiny}", "bits.group_size=32",
            "calibration.num_samples=8", "calibration.seq_len=64", "eval.max_windows=2",
            "eval.seq_len=64", "eval.stride=64", "eval.speed=false", f"hydra.run.dir={out}",
            *extra]


def fault(mode, n, argv):
    return subprocess.run([sys.executable, FAULT, mode, str(n), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def resume(out):
    return run_cli(["resume", str(out)])


def weights_sha(out):
    return json.loads((out / "fingerprints.json").read_text())["quantized_weights_sha256"]


def file_sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def snapshot(d):
    """Every file under d (hidden ones too) -> sha256: what 'loses nothing' compares."""
    return {str(p.relative_to(d)): file_sha(p) for p in sorted(d.rglob("*")) if p.is_file()}


def state(out):
    from qrecipe.record.outputs import run_state
    return run_state(out)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    p = run_cli(args(tiny_model_dir, out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert state(out).complete
    return out


def test_sigkill_during_quantization_then_resume(reference, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    # module 10 of 14 is in the second layer: the first one is committed as a checkpoint.
    p = fault("kill-quantize", 10, args(tiny_model_dir, out))
    assert p.returncode == -9, p.stderr[-3000:]
    st = state(out)
    assert st.incomplete and "quantize" not in st.stages
    assert not (out / "manifest.json").exists() and not (out / "model").exists()
    assert (out / ".checkpoints" / "quantize" / "CURRENT").is_file()  # layer 0 committed
    from qrecipe.report.runs import run_row
    assert run_row(out)["status"] == "incomplete"

    r = resume(out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not verified" not in r.stderr  # its own sealed checkpoint and markers are believed
    assert state(out).complete
    assert weights_sha(out) == weights_sha(reference)
    assert file_sha(out / "model" / "model.safetensors") == \
        file_sha(reference / "model" / "model.safetensors")
    details = json.loads((out / "metrics.json").read_text())["quantize_details"]
    assert details["layer_checkpoints"]
    # the resume hashed the committed layer's objects once (ckptstore.py), then not again
    assert details["checkpoint_verify_bytes"]["hashed"] > 0
    assert details["checkpoint_verify_bytes"]["not_reread"] > 0
    first = json.loads((reference / "metrics.json").read_text())["quantize_details"]
    assert first["checkpoint_verify_bytes"]["hashed"] == 0  # it wrote every object itself
    assert not (out / ".checkpoints").exists()
    from qrecipe.record.outputs import verify_manifest
    assert verify_manifest(out) == []


def test_sigterm_during_saving_then_resume(reference, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    p = fault("term-save", 1, args(tiny_model_dir, out))
    assert p.returncode == 143, p.stderr[-3000:]
    assert f"the partial output in {out} is incomplete" in p.stderr
    assert f"resume with: qrecipe resume {out}" in p.stderr
    assert "Traceback" not in p.stderr
    assert state(out).incomplete and (out / "model.partial").is_dir()
    assert json.loads((out / "error.json").read_text())["status"] == "interrupted"

    r = resume(out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert state(out).complete and not (out / "error.json").exists()
    assert weights_sha(out) == weights_sha(reference)


def test_a_library_exit_inside_quantize_is_a_crash_with_its_record(tiny_model_dir, tmp_path):
    """auto-round 0.15 calls exit(-1) on inputs it refuses (the GPU bench's status 255): the
    run ends as a crash that names the stage, with error.json, never silently."""
    out = tmp_path / "run"
    p = fault("exit-quantize", 1, args(tiny_model_dir, out))
    assert p.returncode == 1, p.stderr[-3000:]
    err = json.loads((out / "error.json").read_text())
    assert err["status"] == "crash"
    assert "a library called exit(-1) during the quantize stage" in err["error"]
    assert not state(out).complete


@pytest.mark.slow
def test_eval_crash_resume_does_not_quantize_again(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    p = fault("crash-eval", 0, args(tiny_model_dir, out))
    assert p.returncode == 1, p.stderr[-3000:]
    assert state(out).stages == ("quantize",)
    saved = snapshot(out / "model")
    mtime = (out / "model" / "model.safetensors").stat().st_mtime_ns
    r = resume(out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "quantize: reusing model/ from an earlier attempt" in r.stderr
    assert snapshot(out / "model") == saved
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == mtime
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed"] == {"reused_stages": ["quantize"]} and "eval" in m


def test_rerun_into_a_complete_run_loses_nothing(reference, tiny_model_dir, tmp_path):
    before = snapshot(reference)
    # The same config (here: its frozen lock) finds it complete: nothing to do.
    p = run_cli(["--config-dir", str(reference), "--config-name", "recipe.lock",
                 f"hydra.run.dir={reference}"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"already complete: {reference}" in p.stderr
    # Another config is refused, in one line.
    p = run_cli(args(tiny_model_dir, reference, "bits=w8", "bits.group_size=32"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "holds a complete run of another config; refusing to overwrite it" in p.stderr
    # `qrecipe resume` on a complete run does nothing either.
    assert resume(reference).returncode == 0
    assert snapshot(reference) == before


@pytest.mark.slow
def test_force_moves_the_old_result_aside(reference, tiny_model_dir, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = snapshot(out)
    p = run_cli(args(tiny_model_dir, out, "method=rtn", "force=true", "eval.enabled=false"))
    assert p.returncode == 0, p.stderr[-3000:]
    aside = [d for d in tmp_path.iterdir() if d.name.startswith("run.replaced-")]
    assert len(aside) == 1 and "force: moved the previous contents" in p.stderr
    # Everything of the old result is there, byte for byte, except Hydra's record and log
    # which the forced run keeps in the directory it writes.
    old = {k: v for k, v in before.items() if not k.startswith(".hydra") and k != "run.log"}
    assert {k: v for k, v in snapshot(aside[0]).items() if k in old} == old
    assert state(out).complete
    from omegaconf import OmegaConf
    assert "force" not in OmegaConf.load(out / "recipe.lock.yaml")  # never frozen


def test_sweep_rerun_skips_complete_jobs_and_resumes_the_rest(tiny_model_dir, tmp_path):
    root = tmp_path / "sweep"
    argv = ["-m", "method=rtn", "model=local", f"model.path={tiny_model_dir}", "bits=w2,w8",
            "bits.group_size=32", "eval.max_windows=2", "eval.seq_len=64", "eval.stride=64",
            "eval.speed=false", f"hydra.sweep.dir={root}"]
    p = run_cli(argv)
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = sorted(d for d in root.iterdir() if d.is_dir())
    assert len(jobs) == 2
    done, unfinished = jobs
    # Make the second job unfinished, as if it had been killed after evaluating.
    (unfinished / "manifest.json").unlink()
    (unfinished / "report.md").unlink()
    kept = snapshot(done)
    p = run_cli(argv)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"already complete: {done}" in p.stderr
    assert snapshot(done) == kept  # the complete job was not touched
    assert state(unfinished).complete
    m = json.loads((unfinished / "metrics.json").read_text())
    assert m["resumed"]["reused_stages"] == ["quantize", "evaluate"]
    rows = list(csv.DictReader(open(root / "summary.csv")))
    assert sorted(r["bits"] for r in rows) == ["2", "8"]
    assert all(r["status"] == "complete" for r in rows)
