"""qrecipe's own overhead on the tiny random Llama (GPTQ via gptqmodel, CPU, in-process): the
fingerprints are the bytes' sha256 as before (the input's is now read on a background thread),
metrics.json splits the wall time, and a failed background hash fails the job."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from conftest import compose
from test_fingerprint import _old_hash_files

pytestmark = pytest.mark.e2e


def _args(tiny, method="gptq"):
    return [f"method={method}", "model=local", f"model.path={tiny}", "bits.group_size=32",
            "calibration.num_samples=8", "calibration.seq_len=64", "eval=none"]


def test_fingerprints_and_overhead_block(tiny_model_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    from qrecipe.backends.gptqmodel import adapter as gptqmodel_backend
    from qrecipe.record.outputs import verify_manifest
    from qrecipe.run.runner import run_job

    # shards as a 7B model gets them (SHARD_BYTES), each hashed while gptqmodel writes it
    monkeypatch.setattr(gptqmodel_backend, "SHARD_BYTES", 64 << 10)
    out = tmp_path / "run"
    assert run_job(compose(_args(tiny_model_dir)), out) == "ok"
    fps = json.loads((out / "fingerprints.json").read_text())
    inputs = [p for p in tiny_model_dir.iterdir() if p.suffix in (".safetensors", ".bin", ".json")]
    assert fps["model_weights_sha256"] == _old_hash_files(inputs)
    weights = sorted((out / "model").glob("*.safetensors"))
    assert len(weights) >= 2  # (a tensor over the limit gets a shard of its own)
    assert fps["quantized_weights_sha256"] == _old_hash_files(weights)
    assert verify_manifest(out) == []  # every digest the manifest reused is the file's own
    # gptqmodel wrote its shard in safetensors' canonical layout (no rewrite needed)
    ref = tmp_path / "ref.safetensors"
    for w in weights:
        save_file(load_file(str(w)), str(ref), metadata={"format": "pt"})
        assert ref.read_bytes() == w.read_bytes()

    m = json.loads((out / "metrics.json").read_text())
    o = m["overhead"]
    assert set(o["backend_s"]) == {"import", "load", "quantize", "save"}
    assert "canonicalize" in o["qrecipe_s"] and m["quantize_details"]["layer_checkpoints"]
    parts = sum(o["imports_s"].values()) + sum(o["backend_s"].values()) + o["evaluate_s"]
    assert o["qrecipe_own_s"] == pytest.approx(o["wall_s"] - parts, abs=0.01)
    assert 0 < o["qrecipe_own_s"] < o["wall_s"]
    assert o["wall_s"] <= sum(m["time_s"].values()) + 30
    assert o["hashing_s"]["input"] is not None and o["hashing_s"]["input_waited"] >= 0
    assert o["hashing_s"]["output"] < 5


def test_a_failing_input_hash_fails_the_job(tiny_model_dir, tmp_path, monkeypatch):
    """The input's sha256 runs on a background thread; its error still ends the job as an
    error (here an I/O error: a crash with its traceback), never a complete run."""
    from qrecipe.inputs import models
    from qrecipe.run.runner import run_job

    def broken(cfg, stop=None):
        raise OSError(errno.EIO, "Input/output error", str(tiny_model_dir / "model.safetensors"))

    monkeypatch.setattr(models, "fingerprint", broken)
    out = tmp_path / "run"
    assert run_job(compose(_args(tiny_model_dir, "rtn")), out) == "crash"
    err = json.loads((out / "error.json").read_text())
    assert "Input/output error" in err["error"]
    assert not (out / "manifest.json").exists() and not (out / "fingerprints.json").exists()


@pytest.mark.parametrize("method", ["hqq", "bnb"])
def test_transformers_saves_are_hashed_as_written(method, tiny_model_dir, tmp_path):
    """The backends that save through transformers' save_pretrained (hqq, bitsandbytes; and
    llm-compressor) hash each shard behind its writer (backends/hf_patches.py): metrics.json
    times the wait after the write as qrecipe's own, and the fingerprint is the bytes' own."""
    from qrecipe.record.outputs import verify_manifest
    from qrecipe.run.runner import run_job

    out = tmp_path / "run"
    assert run_job(compose(_args(tiny_model_dir, method)), out) == "ok"
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["overhead"]["qrecipe_s"]) == {"shard_sha256_wait"}
    assert 0 <= m["overhead"]["qrecipe_s"]["shard_sha256_wait"] < 5
    fps = json.loads((out / "fingerprints.json").read_text())
    weights = sorted((out / "model").glob("*.safetensors"))
    assert fps["quantized_weights_sha256"] == _old_hash_files(weights)
    assert verify_manifest(out) == []


def test_torchs_first_import_in_validation_counts_as_an_import():
    """On a GPU job validation imports torch first (require_cuda): 3.4-4.5 s of the validate stage
    on an H100 host, which metrics.json must count under `imports_s`, not as qrecipe's own."""
    import subprocess
    import sys
    code = ("from qrecipe.telemetry import overhead\n"
            "from qrecipe.backends.base import require_cuda\n"
            "require_cuda('cpu')\n"
            "assert overhead._IMPORTS == [], overhead._IMPORTS\n"
            "try:\n    require_cuda('cuda')\nexcept Exception:\n    pass  # no GPU here\n"
            "print([n for _, n, s in overhead._IMPORTS if s > 0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['torch']"


def test_the_cuda_context_start_counts_with_the_imports(monkeypatch):
    """A CLI job on a GPU starts its CUDA context in validation (resources.check asks the free
    GPU memory): 0.11 s in the 32-layer cold job on an H100, paid by a direct script too, so
    metrics.json counts it under imports_s (CUDA_START), not as qrecipe's own. Where CUDA had
    started already (a sweep's later job), nothing is recorded."""
    import time

    import torch

    from qrecipe.telemetry import overhead
    monkeypatch.setattr(overhead, "_IMPORTS", [])
    started = {"on": False}

    def mem_get_info():
        if not started["on"]:
            time.sleep(0.05)  # the context's start
            started["on"] = True
        return 1 << 40, 1 << 40
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: started["on"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    for _ in range(2):
        with overhead.timed_cuda_start():
            torch.cuda.mem_get_info()
    assert [n for _, n, _ in overhead._IMPORTS] == [overhead.CUDA_START]
    assert overhead._IMPORTS[0][2] >= 0.05
    stages = type("S", (), {"started": overhead._IMPORTS[0][0] - 0.01, "seconds": {},
                            "spans": {}})()
    hashed = type("H", (), {"seconds": 0.0, "waited": 0.0})()
    b = overhead.breakdown(stages, {}, [], hashed)
    assert b["imports_s"][overhead.CUDA_START] >= 0.05 and b["uncached_bytecode"] == []
    assert b["qrecipe_own_s"] <= b["wall_s"] - b["imports_s"][overhead.CUDA_START] + 1e-3
    src = (Path(overhead.__file__).parents[1] / "run" / "resources.py").read_text()
    assert "with timed_cuda_start():" in src  # the free-memory check is the job's first call


def test_the_library_import_counts_wherever_it_ran(monkeypatch):
    """The runner imports the backend's library early (beside the calibration text's
    tokenizing); run() then finds it imported and still reports the import's seconds as the
    library's own (backend_s["import"]), not qrecipe's."""
    import time

    from qrecipe.backends.base import Backend

    class Slow(Backend):
        name = "slow"
        loaded = False

        def library_import(self):
            if not Slow.loaded:
                time.sleep(0.2)
                Slow.loaded = True

    early = Slow()
    first = early.imported()
    assert first >= 0.2 and early.imported() == pytest.approx(first, abs=0.05)
    assert Slow().imported() < 0.05  # a later job of the process: imported already


def test_the_evaluation_text_is_tokenized_beside_the_quantization(tiny_model_dir, tmp_path,
                                                                  monkeypatch):
    """A job that quantizes and evaluates tokenizes the evaluation text on a helper thread
    started before the quantize stage, with a copy of the job's tokenizer; the evaluation
    scores exactly those ids."""
    import threading

    from qrecipe.inputs import models, texts
    from qrecipe.inputs.texts import rows_fingerprint
    from qrecipe.run.runner import run_job

    seen, token_ids, load_tokenizer, jobs = [], texts.token_ids, models.load_tokenizer, []

    def spy(spec, tokenizer, *a, **kw):
        ids = token_ids(spec, tokenizer, *a, **kw)
        seen.append((spec.section, threading.current_thread().name, tokenizer, ids))
        return ids

    monkeypatch.setattr(texts, "token_ids", spy)
    monkeypatch.setattr(models, "load_tokenizer", lambda p: jobs.append(load_tokenizer(p))
                        or jobs[-1])
    args = _args(tiny_model_dir, "rtn")[:-1] + ["eval.max_windows=1", "eval.seq_len=32",
                                                "eval.stride=32", "eval.speed=false"]
    out = tmp_path / "run"
    assert run_job(compose(args), out) == "ok"
    (section, thread, tokenizer, ids), = seen
    assert section == "eval" and thread == "qrecipe-eval-tokens"
    assert len(jobs) == 1 and tokenizer is not jobs[0]  # the job's own stays on the main thread
    fps = json.loads((out / "fingerprints.json").read_text())
    assert fps["eval_token_ids_sha256"] == rows_fingerprint([ids])
