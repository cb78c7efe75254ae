"""Bad inputs, 50+ of them: YAML syntax, schema, semantics, models, outputs, environment. Each
ends with exit code 2, exactly one `error:` line naming the input, no traceback, and no
complete-looking output. They run in-process through the real entry point (qrecipe.cli.main:
Hydra composition, the runner, validation), so the whole suite takes seconds, not a Python
start-up per case."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import JARGON

TINY_ARGS = ["model=local", "bits.group_size=32", "eval.enabled=false",
             "calibration.num_samples=4", "calibration.seq_len=32"]


def cli(argv, capsys):
    """python -m qrecipe ARGV, in this process. Returns (exit code, stderr)."""
    import logging

    from qrecipe import cli as entry
    capsys.readouterr()
    old, handlers = sys.argv, logging.root.handlers[:]
    sys.argv = ["qrecipe", *argv]
    code = 0
    try:
        entry.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
        # Hydra configured logging for this run (a console handler on this test's captured
        # stderr, run.log): undo it, so later tests never log into a closed stream.
        for h in logging.root.handlers:
            if h not in handlers:
                h.close()
        logging.root.handlers = handlers
    return code, capsys.readouterr().err


def _safetensors(path: Path, truncate: int = 0) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}})
    blob = struct.pack("<Q", len(header)) + header.encode() + b"\0" * 64
    path.write_bytes(blob[:len(blob) - truncate] if truncate else blob)


@pytest.fixture(scope="module")
def f(tmp_path_factory, tiny_model_dir):
    """Every bad file the cases point at."""
    d = tmp_path_factory.mktemp("bad")
    cfg = (tiny_model_dir / "config.json").read_text()

    def model_dir(name, files):
        m = d / name
        m.mkdir()
        (m / "config.json").write_text(cfg)
        for fn, make in files.items():
            make(m / fn)
        return m

    ns = SimpleNamespace(tiny=tiny_model_dir, d=d)
    ns.no_weights = model_dir("no_weights", {})
    ns.truncated = model_dir("truncated", {"model.safetensors":
                                           lambda p: _safetensors(p, truncate=10)})
    ns.garbage_st = model_dir("garbage_st", {"model.safetensors":
                                             lambda p: p.write_bytes(b"\xff" * 100)})
    ns.pickle_only = model_dir("pickle_only", {"pytorch_model.bin":
                                               lambda p: p.write_bytes(b"\x80\x04K\x01.")})
    ns.bad_config = model_dir("bad_config", {"model.safetensors": _safetensors})
    (ns.bad_config / "config.json").write_text("{not json")
    ns.no_config = d / "no_config"
    ns.no_config.mkdir()
    ns.not_gguf = d / "model.gguf"
    ns.not_gguf.write_text("this is not a GGUF file\n")
    ns.binary = d / "binary.txt"
    ns.binary.write_bytes(b"text\0\x01\x02" * 100)
    ns.latin1 = d / "latin1.txt"
    ns.latin1.write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e ".encode("latin-1") * 50)
    ns.no_field = d / "no_field.jsonl"
    ns.no_field.write_text('{"body": "x"}\n')
    ns.bad_jsonl = d / "bad.jsonl"
    ns.bad_jsonl.write_text('{"text": "ok"}\n{"text": unquoted}\n')
    ns.empty = d / "empty.txt"
    ns.empty.write_text("")
    ns.csv = d / "calib.csv"
    ns.csv.write_text("text\nhello\n")
    ns.short = d / "short.txt"
    ns.short.write_text("Far too short to calibrate on.")
    import pyarrow as pa
    import pyarrow.parquet as pq
    ns.empty_parquet = d / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), ns.empty_parquet)
    ns.bad_parquet = d / "bad.parquet"
    ns.bad_parquet.write_bytes(b"PAR1 not really")
    ns.a_file = d / "a_file"
    ns.a_file.write_text("x")
    rec = d / "recipe"
    rec.mkdir()
    (rec / "unclosed.yaml").write_text("# @package _global_\nbits: {width: 4\n")
    (rec / "tabs.yaml").write_text("# @package _global_\nbits:\n\twidth: 4\n")
    (rec / "dupkey.yaml").write_text("# @package _global_\nseed: 1\nseed: 2\n")
    (rec / "unknownkey.yaml").write_text("# @package _global_\nmethod:\n  dampp: 0.1\n")
    (rec / "wrongtype.yaml").write_text("# @package _global_\nbits:\n  width: four\n")
    (rec / "alist.yaml").write_text("# @package _global_\n- 1\n- 2\n")
    return ns


def local(f, *extra):
    return [*TINY_ARGS, f"model.path={f.tiny}", *extra]


def calib(f, path, *extra):
    return local(f, "calibration=local", f"calibration.path={path}", *extra)


# name -> (argv builder, expected text in the error line). Dry runs where validation decides.
CASES = {
    # YAML syntax (recipes found through QRECIPE_RECIPE_PATH: every yaml case sets it)
    "yaml unclosed brace": (lambda f: ["+recipe=unclosed"], "unclosed"),
    "yaml tab indentation": (lambda f: ["+recipe=tabs"], "tabs"),
    "yaml duplicate key": (lambda f: ["+recipe=dupkey"], "seed"),
    "yaml list not mapping": (lambda f: ["+recipe=alist"], "alist"),
    "yaml unknown key in recipe": (lambda f: ["+recipe=unknownkey"], "dampp"),
    "yaml wrong type in recipe": (lambda f: ["+recipe=wrongtype"], "four"),
    "override syntax": (lambda f: ["bits.width=[1,"], "bits.width=[1,"),
    # schema
    "unknown key": (lambda f: ["method.dampp=0.1"], "dampp"),
    "unknown top-level key": (lambda f: ["foo=1"], "'foo'"),
    "wrong type int": (lambda f: ["bits.width=four"], "bits.width=four"),
    "wrong type samples": (lambda f: ["calibration.num_samples=many"],
                           "calibration.num_samples=many"),
    "wrong type bool": (lambda f: ["eval.enabled=maybe"], "eval.enabled=maybe"),
    "wrong type threads": (lambda f: ["hardware.num_threads=x"], "hardware.num_threads=x"),
    "null where required": (lambda f: ["bits.group_size=null"], "bits.group_size"),
    "missing model path": (lambda f: ["model=local", "dry_run=true"], "model.path"),
    "unknown group option": (lambda f: ["bits=w5"], "allowed: w2, w3, w4, w4_g64, w8"),
    "unknown recipe": (lambda f: ["+recipe=nope"], "smollm2_gptq_w4"),
    # semantics
    "awq 2-bit on gptqmodel": (lambda f: local(f, "method=awq", "method.backend=gptqmodel",
                                               "bits=w2", "bits.group_size=32"),
                               "bits.width=2"),
    "bnb 3-bit": (lambda f: local(f, "method=bnb", "bits=w3"), "bits.width=3"),
    "fp8 unknown scheme": (lambda f: local(f, "method=fp8", "bits=w8", "bits.group_size=-1",
                                           "method.scheme=blok", "dry_run=true"),
                           "method.scheme='blok': unknown FP8 scheme"),
    "group size does not divide": (lambda f: local(f, "bits.group_size=128"),
                                   "hidden_size (64)"),
    "unsupported group size": (lambda f: local(f, "bits.group_size=48"),
                               "bits.group_size=48"),
    "w4 per channel on cpu": (lambda f: local(f, "bits.group_size=-1"), "bits.group_size=-1"),
    "zero samples": (lambda f: local(f, "calibration.num_samples=0"),
                     "calibration.num_samples=0"),
    "negative seq_len": (lambda f: local(f, "calibration.seq_len=-5"),
                         "calibration.seq_len=-5"),
    "zero eval stride": (lambda f: local(f, "eval.enabled=true", "eval.stride=0"),
                         "eval.stride=0"),
    "unknown dtype": (lambda f: local(f, "model.dtype=float8"), "model.dtype='float8'"),
    "unknown device": (lambda f: local(f, "hardware.device=tpu"), "hardware.device='tpu'"),
    "backend without method": (lambda f: local(f, "method=bnb", "method.backend=gptqmodel"),
                               "method.backend='gptqmodel'"),
    "unknown backend": (lambda f: local(f, "method.backend=autogptq"), "autogptq"),
    "unknown calibration source": (lambda f: local(f, "calibration.source=s3"),
                                   "calibration.source='s3'"),
    "recipe_name traversal": (lambda f: local(f, "recipe_name=../../etc"),
                              "recipe_name='../../etc'"),
    "recipe_name absolute": (lambda f: local(f, "recipe_name=/tmp/x"), "recipe_name='/tmp/x'"),
    # calibration and eval files
    "binary calibration file": (lambda f: calib(f, f.binary), "not UTF-8 text"),
    "non-utf8 calibration file": (lambda f: calib(f, f.latin1), "not UTF-8 text"),
    "jsonl without text field": (lambda f: calib(f, f.no_field),
                                 "calibration.text_field='text'"),
    "jsonl not json": (lambda f: calib(f, f.bad_jsonl, "dry_run=false"), "not valid JSON"),
    "empty parquet": (lambda f: calib(f, f.empty_parquet, "dry_run=false"), "no text found"),
    "corrupt parquet": (lambda f: calib(f, f.bad_parquet, "dry_run=false"),
                        "not a readable parquet file"),
    "empty calibration file": (lambda f: calib(f, f.empty), "file is empty"),
    "unsupported calibration type": (lambda f: calib(f, f.csv), "unsupported file type"),
    "missing calibration file": (lambda f: calib(f, "/nope.txt"), "calibration.path='/nope.txt'"),
    "missing eval file": (lambda f: local(f, "eval.enabled=true", "eval.path=/nope.txt"),
                          "eval.path='/nope.txt'"),
    "text too short": (lambda f: calib(f, f.short, "dry_run=false"),
                       "calibration text too short"),
    "no overlap and too many samples": (
        lambda f: calib(f, JARGON, "calibration.overlap=false", "calibration.num_samples=100000",
                        "calibration.seq_len=64", "dry_run=false"),
        "without overlap"),
    # models
    "folder without weights": (lambda f: [*TINY_ARGS, f"model.path={f.no_weights}"],
                               "no weights"),
    "truncated safetensors": (lambda f: [*TINY_ARGS, f"model.path={f.truncated}"],
                              "corrupt safetensors file model.safetensors"),
    "garbage safetensors": (lambda f: [*TINY_ARGS, f"model.path={f.garbage_st}"],
                            "corrupt safetensors"),
    "pickle weights without opt-in": (lambda f: [*TINY_ARGS, f"model.path={f.pickle_only}"],
                                      "model.allow_pickle=true"),
    "unreadable config.json": (lambda f: [*TINY_ARGS, f"model.path={f.bad_config}"],
                               "config.json is not valid JSON"),
    "folder without config.json": (lambda f: [*TINY_ARGS, f"model.path={f.no_config}"],
                                   "no config.json"),
    "not a gguf": (lambda f: ["model.source=gguf", f"model.path={f.not_gguf}"],
                   "not a GGUF file"),
    "missing gguf": (lambda f: ["model.path=/nope.gguf"], "model.path='/nope.gguf'"),
    "unknown model source": (lambda f: ["model.source=ftp"], "model.source='ftp'"),
    "package not installed": (lambda f: ["model.path=pkg://no_such_pkg/x.gguf"],
                              "pip install no-such-pkg"),
    # outputs
    "a file where the output dir should be": (
        lambda f: local(f, f"hydra.run.dir={f.a_file}/run"), "is a file, not a directory"),
}

# Cases that are not dry runs (their error comes from a later stage) say dry_run=false.
DRY = "dry_run=true"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, f, tmp_path, capsys, monkeypatch):
    build, expect = CASES[name]
    if name.startswith("yaml "):
        monkeypatch.setenv("QRECIPE_RECIPE_PATH", str(f.d / "recipe"))
    argv = build(f)
    out = tmp_path / "run"
    if "dry_run=false" not in argv:
        argv = [*argv, DRY]
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        argv.append(f"hydra.run.dir={out}")
    code, err = cli(argv, capsys)
    check_one_line(code, err, expect)
    assert not (out / "manifest.json").exists()
    assert not out.exists() or not (out / "model").exists()


def check_one_line(code, err, expect):
    assert code == 2, err[-2000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err[-2000:]
    assert expect in errors[0], errors[0]
    assert "Traceback" not in err


# --- cases that need a prepared directory or a patched environment ---------------------------

def _fake_complete(d: Path, lock: str = "recipe_name: other\n") -> dict:
    d.mkdir(parents=True)
    (d / "recipe.lock.yaml").write_text(lock)
    (d / "manifest.json").write_text('{"complete": true, "files": {}}')
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}


def test_refuses_a_complete_run_of_another_config(f, tmp_path, capsys):
    out = tmp_path / "run"
    before = _fake_complete(out)
    code, err = cli(local(f, f"hydra.run.dir={out}"), capsys)
    check_one_line(code, err, "holds a complete run of another config")
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in out.iterdir()} == before  # not one byte written, Hydra's record included


def test_refuses_foreign_files(f, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    code, err = cli(local(f, f"hydra.run.dir={out}"), capsys)
    check_one_line(code, err, "files that are not a qrecipe run")
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_refuses_while_another_run_writes(f, tmp_path, capsys):
    from qrecipe.run.rundir import Claim
    out = tmp_path / "run"
    held = Claim(out)  # another run holds the directory's lock
    try:
        code, err = cli(local(f, f"hydra.run.dir={out}"), capsys)
        check_one_line(code, err, f"another qrecipe run (pid {os.getpid()}) is writing")
    finally:
        held.release()
    assert out.is_dir()  # the other run's directory is not removed


def test_read_only_output(f, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if Path(p) == ro
                        else real(p, m, *a, **k))
    code, err = cli(local(f, f"hydra.run.dir={ro}/run"), capsys)
    check_one_line(code, err, "is read-only")
    assert not (ro / "run").exists()


def test_disk_full_while_writing(f, tmp_path, capsys, monkeypatch):
    from qrecipe.recipes import frozen

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run"))
    monkeypatch.setattr(frozen, "write_lock", full)
    code, err = cli(local(f, f"hydra.run.dir={tmp_path / 'run'}"), capsys)
    check_one_line(code, err, "cannot write the results (the disk is full")


def test_not_enough_disk(f, tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 0))
    code, err = cli(local(f, f"hydra.run.dir={tmp_path / 'run'}"), capsys)
    check_one_line(code, err, "not enough free disk for the output: 0.00 GiB free")


def test_not_enough_memory(f, tmp_path, capsys, monkeypatch):
    import psutil
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=1024))
    code, err = cli(local(f, f"hydra.run.dir={tmp_path / 'run'}"), capsys)
    check_one_line(code, err, "not enough free memory")
    assert "lower calibration.num_samples" in err


@pytest.mark.parametrize("exc", ["MemoryError", "torch.OutOfMemoryError"])
def test_out_of_memory_while_quantizing(exc, f, tmp_path, capsys, monkeypatch):
    from qrecipe.backends.gptqmodel.adapter import GPTQModelBackend

    def oom(self, req):
        import torch
        raise (MemoryError() if exc == "MemoryError"
               else torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB"))
    monkeypatch.setattr(GPTQModelBackend, "quantize", oom)
    out = tmp_path / "run"
    code, err = cli(local(f, f"hydra.run.dir={out}"), capsys)
    check_one_line(code, err, "out of memory during quantize")
    assert "num_samples=4, seq_len=32" in err and "lower calibration.num_samples" in err
    assert not out.exists()  # a single run rejected by the user's settings leaves nothing


def test_missing_optional_backend(f, tmp_path, capsys, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    code, err = cli(local(f, "method=bnb", "bits=w4", DRY, f"hydra.run.dir={tmp_path}/r"),
                    capsys)
    check_one_line(code, err, "backend needs bitsandbytes")


def test_no_cuda(f, tmp_path, capsys):
    """A dry run checks the config, not this machine (issue 26): a GPU config is valid here, and
    says the hardware was not checked; the real run is refused before any weight, in one line."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    code, err = cli(local(f, "hardware=gpu_24gb", DRY, f"hydra.run.dir={tmp_path}/d"), capsys)
    assert code == 0 and "dry run: valid" in err, err
    assert "hardware not checked here: a visible CUDA device" in err
    code, err = cli(local(f, "hardware=gpu_24gb", f"hydra.run.dir={tmp_path}/r"), capsys)
    check_one_line(code, err, "hardware.device='cuda': no CUDA device is visible")


def test_hub_id_offline(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    code, err = cli(["+recipe=gptq_llama7b", "hardware=cpu", DRY,
                     f"hydra.run.dir={tmp_path}/r"], capsys)
    check_one_line(code, err, "model.path='meta-llama/Llama-2-7b-hf': HF_HUB_OFFLINE is set")
    # a hub id the shipped configs know nothing of: the same line, nothing fetched
    code, err = cli(["+recipe=gptq_llama7b", "hardware=cpu", "model.path=org/no-such-model", DRY,
                     f"hydra.run.dir={tmp_path}/r2"], capsys)
    check_one_line(code, err, "model.path='org/no-such-model': HF_HUB_OFFLINE is set")


def test_pickle_opt_in_is_accepted(f, tmp_path, capsys):
    """The opt-in key lets a pickle-only directory through the safety check."""
    from omegaconf import OmegaConf

    from qrecipe.inputs.weights import check_model
    check_model(OmegaConf.create({"source": "local", "path": str(f.pickle_only),
                                  "allow_pickle": True}))


def test_case_count():
    # The issue asks for at least 40 bad-input cases.
    extra = [n for n in globals() if n.startswith("test_") and n not in
             ("test_bad_input", "test_case_count", "test_pickle_opt_in_is_accepted")]
    assert len(CASES) + len(extra) + 1 >= 40  # +1: the second OOM parametrization
