"""Run directories and caches are data (issue 23, classes 4, 5, 7, 8, 11): a received run
directory, a manifest, a stage marker, a cache entry or a file-hash memo entry from someone else
never makes qrecipe write outside the output directory, read a file outside it, leak a secret,
or pass off forged results.

Every refusal runs the real command (`qrecipe resume DIR`, `qrecipe verify DIR`, `python -m
qrecipe ... hydra.run.dir=DIR [dry_run=true]`) against a directory built here, and asserts exit
2, ONE `error:` line, no traceback, and that a sentinel file outside DIR that a symbolic link in
DIR targets keeps its content and mtime (and that DIR itself is not written). The received
directories are copies of one real finished run (tiny random Llama, RTN), built once; the
forged-marker cases resume a copy for real.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest
from conftest import run_cli

from qrecipe.boundary import sealed


@pytest.fixture(scope="module", autouse=True)
def seal_key(tmp_path_factory):
    """This session's seal key, never the user's (~/.config/qrecipe/seal.key); subprocesses
    inherit it."""
    old = os.environ.get(sealed.ENV)
    key = tmp_path_factory.getbasetemp() / "seal.key"
    os.environ[sealed.ENV] = str(key)
    yield key
    if old is None:
        os.environ.pop(sealed.ENV, None)
    else:
        os.environ[sealed.ENV] = old


def run_args(tiny, out, *extra):
    return ["method=rtn", "model=local", f"model.path={tiny}", "bits.group_size=32",
            "eval.max_windows=2", "eval.seq_len=64", "eval.stride=64", "eval.speed=false",
            f"hydra.run.dir={out}", *extra]


@pytest.fixture(scope="module")
def base(tiny_model_dir, tmp_path_factory):
    """One real finished run (RTN, evaluated on 2 windows): every received directory below is a
    copy of it."""
    out = tmp_path_factory.mktemp("base") / "run"
    p = run_cli(run_args(tiny_model_dir, out))
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def received(base, tmp_path, complete=False) -> Path:
    """A copy of the finished run; unfinished (no manifest, no report) unless complete."""
    d = tmp_path / "recv" / "run"
    shutil.copytree(base, d, symlinks=True)
    if not complete:
        (d / "manifest.json").unlink()
        (d / "report.md").unlink()
    return d


class Sentinel:
    """A file outside DIR that a link in DIR points at: it must keep content and mtime."""

    def __init__(self, path: Path, text: str = "import os  # the user's own file\n"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.path, self.text = path, text
        self.mtime = path.stat().st_mtime_ns

    def untouched(self) -> None:
        assert self.path.read_text() == self.text
        assert self.path.stat().st_mtime_ns == self.mtime


def tree(d: Path) -> dict:
    """Every entry under d, links not followed: (mode, size, mtime) by relative path."""
    out = {}
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            st = os.lstat(os.path.join(root, n))
            out[os.path.relpath(os.path.join(root, n), d)] = (st.st_mode, st.st_size,
                                                              st.st_mtime_ns)
    return out


def refused(p, *needles) -> str:
    """Exit 2, one `error:` line naming each needle, no traceback."""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, p.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-3000:]
    assert "Traceback" not in p.stderr + p.stdout
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def link(path: Path, target: Path) -> None:
    if path.exists() or path.is_symlink():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.symlink_to(target)


# --- qrecipe resume DIR: a DIR holding a link is refused before anything is written ---------

@pytest.mark.parametrize("name", ["run.log", ".qrecipe.lock", "error.json", "metrics.json"])
def test_resume_refuses_a_file_link(base, tmp_path, name):
    d = received(base, tmp_path)
    s = Sentinel(tmp_path / "outside" / ("evil.pth" if name == "metrics.json" else "victim"))
    link(d / name, s.path)
    before = tree(d)
    line = refused(run_cli(["resume", str(d)]), "DIR=", f"{d / name} is a symbolic link")
    assert "qrecipe never writes or reads through it" in line
    s.untouched()
    assert tree(d) == before  # nothing written into DIR either


def test_resume_refuses_a_stages_link_to_another_folder(base, tmp_path):
    d = received(base, tmp_path)
    elsewhere = tmp_path / "outside" / "stages"
    shutil.copytree(d / ".stages", elsewhere)
    s = Sentinel(elsewhere / "quantize.json", (elsewhere / "quantize.json").read_text())
    link(d / ".stages", elsewhere)
    before = tree(elsewhere)
    refused(run_cli(["resume", str(d)]), f"{d / '.stages'} is a symbolic link")
    s.untouched()
    assert tree(elsewhere) == before


def test_resume_refuses_a_dir_that_is_a_link(base, tmp_path):
    real = received(base, tmp_path)
    d = tmp_path / "alias"
    d.symlink_to(real)
    before = tree(real)
    refused(run_cli(["resume", str(d)]), f"{d} is a symbolic link")
    assert tree(real) == before


def test_resume_refuses_a_fifo(base, tmp_path):
    d = received(base, tmp_path)
    os.mkfifo(d / "fingerprints.json.fifo")  # would block a reader forever
    refused(run_cli(["resume", str(d)]), "is not a regular file (a FIFO, device or socket)")


def test_resume_refuses_a_link_deep_inside(base, tmp_path):
    d = received(base, tmp_path)
    s = Sentinel(tmp_path / "outside" / "tokenizer.json")
    link(d / "model" / "tokenizer.json", s.path)
    refused(run_cli(["resume", str(d)]), f"{d / 'model' / 'tokenizer.json'} is a symbolic link")
    s.untouched()


# --- a new run (and a dry run) into hydra.run.dir=DIR ---------------------------------------

def _new_dir_with_link(tmp_path, name, target):
    d = tmp_path / "out" / "run"
    d.mkdir(parents=True)
    link(d / name, target)
    return d


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry_run"])
@pytest.mark.parametrize("name", ["run.log", ".qrecipe.lock", "error.json"])
def test_new_run_refuses_a_file_link(tiny_model_dir, tmp_path, name, dry):
    s = Sentinel(tmp_path / "outside" / "victim")
    d = _new_dir_with_link(tmp_path, name, s.path)
    before = tree(d)
    extra = ["dry_run=true"] if dry else ["eval.enabled=false"]
    refused(run_cli(run_args(tiny_model_dir, d, *extra)), "hydra.run.dir=",
            f"{d / name} is a symbolic link")
    s.untouched()
    assert tree(d) == before  # no .hydra/, no run.log, nothing removed


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry_run"])
def test_new_run_refuses_a_hydra_link(tiny_model_dir, tmp_path, dry):
    elsewhere = tmp_path / "outside" / "hydra"
    elsewhere.mkdir(parents=True)
    s = Sentinel(elsewhere / "config.yaml")  # Hydra would write its record here
    d = _new_dir_with_link(tmp_path, ".hydra", elsewhere)
    extra = ["dry_run=true"] if dry else ["eval.enabled=false"]
    refused(run_cli(run_args(tiny_model_dir, d, *extra)), f"{d / '.hydra'} is a symbolic link")
    s.untouched()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry_run"])
def test_new_run_refuses_an_output_dir_that_is_a_link(tiny_model_dir, tmp_path, dry):
    elsewhere = tmp_path / "outside" / "target"
    elsewhere.mkdir(parents=True)
    d = tmp_path / "out" / "run"
    d.parent.mkdir()
    d.symlink_to(elsewhere)
    extra = ["dry_run=true"] if dry else ["eval.enabled=false"]
    refused(run_cli(run_args(tiny_model_dir, d, *extra)), f"{d} is a symbolic link")
    assert list(elsewhere.iterdir()) == []  # Hydra made nothing through the link


def test_rerun_into_a_received_complete_run_with_a_log_link(base, tiny_model_dir, tmp_path):
    d = received(base, tmp_path, complete=True)
    s = Sentinel(tmp_path / "outside" / "victim")
    link(d / "run.log", s.path)
    refused(run_cli(run_args(tiny_model_dir, d)), f"{d / 'run.log'} is a symbolic link")
    s.untouched()


def test_sweep_refuses_a_sweep_dir_holding_a_link(tiny_model_dir, tmp_path):
    s = Sentinel(tmp_path / "outside" / "victim")
    root = tmp_path / "sweep"
    root.mkdir()
    link(root / "multirun.yaml", s.path)  # Hydra writes multirun.yaml there first
    p = run_cli(["-m", "method=rtn", "model=local", f"model.path={tiny_model_dir}",
                 "bits=w4,w8", "eval.enabled=false", f"hydra.sweep.dir={root}"])
    refused(p, "hydra.sweep.dir=", f"{root / 'multirun.yaml'} is a symbolic link")
    s.untouched()


def test_hydra_resolvers_never_point_into_a_linked_dir(tmp_path):
    """The resolvers Hydra's own writes go through (run.log, .hydra/): defense in depth behind
    the callback, e.g. a sweep job's directory."""
    from qrecipe.run.rundir import hydra_run_log, hydra_subdir
    d = tmp_path / "job"
    d.mkdir()
    assert hydra_run_log(str(d)) == str(d / "run.log") and hydra_subdir(str(d)) == ".hydra"
    link(d / "run.log", tmp_path / "victim")
    assert hydra_run_log(str(d)) == os.devnull and hydra_subdir(str(d)) is None
    (d / "run.log").unlink()
    (d / "sub").mkdir()
    link(d / "sub" / "x", tmp_path)
    assert hydra_run_log(str(d)) == os.devnull and hydra_subdir(str(d)) is None
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path / "elsewhere")
    assert hydra_run_log(str(alias)) == os.devnull and hydra_subdir(str(alias)) is None


def test_run_log_handler_never_writes_through_a_link(tmp_path):
    import logging

    from qrecipe.telemetry.logs import RunLogHandler
    s = Sentinel(tmp_path / "victim")
    link(tmp_path / "run.log", s.path)
    h = RunLogHandler(tmp_path / "run.log")
    h.emit(logging.makeLogRecord({"msg": "import evil"}))
    h.close()
    s.untouched()


# --- qrecipe verify DIR: nothing outside DIR is hashed, no file goes unhashed ----------------

def _edit_manifest(d: Path, **files) -> None:
    m = json.loads((d / "manifest.json").read_text())
    m["files"].update(files)
    (d / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("entry, why", [
    ("../outside.txt", "has '..': it leaves the directory"),
    ("model/../../outside.txt", "has '..': it leaves the directory"),
    ("/etc/hostname", "is absolute: it leaves the directory"),
    ("/proc/self/environ", "is absolute: it leaves the directory"),
])
def test_verify_refuses_a_manifest_path_leaving_dir(base, tmp_path, entry, why):
    d = received(base, tmp_path, complete=True)
    (d.parent / "outside.txt").write_text("not the run's")
    _edit_manifest(d, **{entry: {"bytes": 1, "sha256": "0" * 64}})
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    p = run_cli(["verify", str(d)], env={"QRECIPE_TEST_SECRET": secret})
    refused(p, f"manifest.json entry {entry!r} {why}")
    assert p.stdout == "" and secret not in p.stderr  # refused before anything was hashed


def test_verify_refuses_a_null_hash_for_weights(base, tmp_path):
    d = received(base, tmp_path, complete=True)
    _edit_manifest(d, **{"model/model.safetensors": {"bytes": 1, "sha256": None}})
    (d / "model" / "model.safetensors").write_bytes(b"swapped weights")
    refused(run_cli(["verify", str(d)]),
            "manifest.json entry 'model/model.safetensors' has no sha256")


def test_verify_still_accepts_the_unhashed_run_log(base, tmp_path):
    d = received(base, tmp_path, complete=True)
    assert json.loads((d / "manifest.json").read_text())["files"]["run.log"]["sha256"] is None
    p = run_cli(["verify", str(d)])
    assert p.returncode == 0 and p.stdout.startswith("intact: "), p.stderr[-2000:]


def test_verify_refuses_a_linked_model_file(base, tmp_path):
    d = received(base, tmp_path, complete=True)
    outside = tmp_path / "outside" / "model.safetensors"
    outside.parent.mkdir()
    shutil.copy(d / "model" / "model.safetensors", outside)  # same bytes: would look intact
    link(d / "model" / "model.safetensors", outside)
    p = run_cli(["verify", str(d)])
    refused(p, "DIR=", f"{d / 'model' / 'model.safetensors'} is a symbolic link")
    assert p.stdout == ""


def test_verify_refuses_a_fifo_named_in_the_manifest(base, tmp_path):
    d = received(base, tmp_path, complete=True)
    (d / "metrics.json").unlink()
    os.mkfifo(d / "metrics.json")  # hashing it would wait forever
    refused(run_cli(["verify", str(d)]), "is not a regular file (a FIFO, device or socket)")


# --- forged stage markers: the stage runs again, the results are the real ones --------------

def _resume_ok(d: Path):
    r = run_cli(["resume", str(d)])
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text())


def test_forged_quantize_marker_and_swapped_model_are_redone(base, tmp_path):
    from qrecipe.run.stages import model_files, weights_sha256
    d = received(base, tmp_path)
    w = d / "model" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-64:] = bytes(64)  # other weights, still a loadable file
    w.write_bytes(bytes(data))
    q = json.loads((d / ".stages" / "quantize.json").read_text())
    q.update(model_files=model_files(d / "model"), quantized_weights_sha256=weights_sha256(
        d / "model"), seal="0" * 64)
    (d / ".stages" / "quantize.json").write_text(json.dumps(q))
    e = json.loads((d / ".stages" / "evaluate.json").read_text())
    e["quantized_weights_sha256"] = q["quantized_weights_sha256"]
    e["eval"]["quantized"]["ppl"] = 1.0  # forged metrics
    (d / ".stages" / "evaluate.json").write_text(json.dumps(e))
    r = _resume_ok(d)
    assert "resume: stage quantize not verified (its seal does not match" in r.stderr
    assert "running it again" in r.stderr
    assert w.read_bytes() == (base / "model" / "model.safetensors").read_bytes()
    assert _metrics(d)["eval"]["quantized"]["ppl"] != 1.0
    assert "resumed" not in _metrics(d) or "quantize" not in _metrics(d)["resumed"][
        "reused_stages"]
    v = run_cli(["verify", str(d)])
    assert v.returncode == 0 and v.stdout.startswith("intact: "), v.stdout + v.stderr
    fps = json.loads((d / "fingerprints.json").read_text())
    assert fps["quantized_weights_sha256"] == weights_sha256(d / "model") != \
        q["quantized_weights_sha256"]


def test_forged_evaluate_metrics_are_scored_again(base, tmp_path):
    d = received(base, tmp_path)
    e = json.loads((d / ".stages" / "evaluate.json").read_text())
    e["eval"]["quantized"]["ppl"] = 1.0  # same weights, forged score, seal kept
    (d / ".stages" / "evaluate.json").write_text(json.dumps(e))
    r = _resume_ok(d)
    assert "resume: stage evaluate not verified (its seal does not match" in r.stderr
    assert "quantize: reusing model/ from an earlier attempt" in r.stderr  # its seal verified
    m = _metrics(d)
    assert m["resumed"]["reused_stages"] == ["quantize"]
    assert m["eval"]["quantized"]["ppl"] == pytest.approx(
        _metrics(base)["eval"]["quantized"]["ppl"], rel=1e-4)


def test_a_marker_sealed_by_another_key_is_not_believed(base, tmp_path, seal_key):
    d = received(base, tmp_path)
    q = json.loads((d / ".stages" / "quantize.json").read_text())
    body = {k: v for k, v in q.items() if k != sealed.SEAL}
    os.environ[sealed.ENV] = str(tmp_path / "their.key")  # the sender's own key
    try:
        forged = sealed.sealed("stage:quantize", body)
    finally:
        os.environ[sealed.ENV] = str(seal_key)
    assert forged[sealed.SEAL] != q[sealed.SEAL]
    (d / ".stages" / "quantize.json").write_text(json.dumps(forged))
    r = _resume_ok(d)
    assert "resume: stage quantize not verified" in r.stderr
    assert "quantize" not in _metrics(d).get("resumed", {}).get("reused_stages", [])


def test_a_marker_of_another_lock_is_not_believed(base, tmp_path):
    """A sealed marker copied from another of the user's runs (another config)."""
    from qrecipe.run import stages
    d = received(base, tmp_path)
    assert stages.load(d, "quantize") is not None
    lock = d / "recipe.lock.yaml"
    lock.write_text(lock.read_text().replace("seed: 0", "seed: 1"))
    assert stages.load(d, "quantize") is None
    assert stages.finished_quantize(d) is None


def test_a_changed_config_in_model_is_not_reused(base, tmp_path):
    """The quantize marker vouches for every file of model/, not only the weights."""
    from qrecipe.run import stages
    d = received(base, tmp_path)
    assert stages.finished_quantize(d) is not None
    cfg = json.loads((d / "model" / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}
    (d / "model" / "config.json").write_text(json.dumps(cfg))
    assert stages.finished_quantize(d) is None


def test_a_planted_layer_checkpoint_is_not_resumed_from(base, tmp_path, caplog):
    """gptqmodel continues from .checkpoints/quantize (CURRENT names its objects by sha256):
    only a checkpoint this user's run sealed while writing it is kept for a resume."""
    from qrecipe.run import stages
    d = received(base, tmp_path)
    ck = stages.checkpoint_dir(d)
    (ck / "objects").mkdir(parents=True)
    (ck / "CURRENT").write_text('{"version": 1, "generations": ["' + "a" * 64 + '"]}')
    stages.keep_verified_checkpoints(d)  # planted: no seal
    assert not (d / stages.CHECKPOINTS).exists()
    assert "per-layer checkpoints of stage quantize are not verified" in caplog.text
    (ck / "objects").mkdir(parents=True)
    (ck / "CURRENT").write_text('{"version": 1, "generations": ["' + "b" * 64 + '"]}')
    with stages.CheckpointSeal(d, every=0.01):  # this run's backend commits a layer
        pass
    stages.keep_verified_checkpoints(d)
    assert (ck / "CURRENT").is_file()  # sealed: kept
    (ck / "CURRENT").write_text('{"version": 1, "generations": ["' + "c" * 64 + '"]}')
    stages.keep_verified_checkpoints(d)  # changed after its seal
    assert not (d / stages.CHECKPOINTS).exists()


# --- caches: a planted entry is ignored and computed again -----------------------------------

def test_planted_cache_json_entry_is_ignored(tmp_path):
    from qrecipe.record.cache import Cache
    c = Cache(tmp_path / "cache")
    key = "ab" * 32
    (tmp_path / "cache" / "baselines").mkdir(parents=True)
    (tmp_path / "cache" / "baselines" / f"{key}.json").write_text('{"ppl": 1.0}')  # planted
    assert c.load_json("baselines", key) is None and c.hits == []
    c.save_json("baselines", key, {"ppl": 12.5})
    assert c.load_json("baselines", key) == {"ppl": 12.5}
    (tmp_path / "cache" / "baselines" / f"{key}.json").write_text('{"ppl": 1.0}')  # edited
    assert c.load_json("baselines", key) is None
    # a sealed entry copied to another key does not verify either
    c.save_json("baselines", key, {"ppl": 12.5})
    other = "cd" * 32
    for suffix in (".json", ".json.seal"):
        shutil.copy(tmp_path / "cache" / "baselines" / f"{key}{suffix}",
                    tmp_path / "cache" / "baselines" / f"{other}{suffix}")
    assert c.load_json("baselines", other) is None


def test_planted_tensor_entry_is_never_loaded(tmp_path):
    import torch

    from qrecipe.record.cache import Cache
    c = Cache(tmp_path / "cache")
    key = "ef" * 32
    (tmp_path / "cache" / "tokens").mkdir(parents=True)
    torch.save(torch.tensor([6, 6, 6]), tmp_path / "cache" / "tokens" / f"{key}.pt")
    assert c.load_tensor("tokens", key) is None
    (tmp_path / "cache" / "tokens" / f"{key}.pt").write_bytes(b"not a tensor at all")
    assert c.load_tensor("tokens", key) is None  # not parsed: no error either
    c.save_tensor("tokens", key, torch.tensor([1, 2, 3]))
    assert c.load_tensor("tokens", key).tolist() == [1, 2, 3]


def test_planted_file_hash_memo_entry_is_ignored(tmp_path, caplog):
    import hashlib

    from qrecipe.record import filehash
    from qrecipe.record.fingerprint import sha256_file
    f = tmp_path / "model.safetensors"
    f.write_bytes(os.urandom(filehash.MIN_BYTES + 1))
    real = hashlib.sha256(f.read_bytes()).hexdigest()
    memo = tmp_path / "memo"
    ident = filehash._identity(f)
    entry = filehash._entry(memo, ident)
    entry.parent.mkdir(parents=True)
    entry.write_text(json.dumps({"identity": ident, "sha256": "0" * 64}))  # "unchanged"
    with filehash.memo(memo):
        assert sha256_file(f) == real
    assert "file-hash memo: entry for" in caplog.text and "not verified" in caplog.text
    with filehash.memo(memo):  # rewritten, sealed: used from now on
        assert filehash._saved(entry, ident) == real


def test_dequantized_model_folder_entry_is_sealed(tmp_path):
    from qrecipe.record.cache import seal_folder, verify_folder
    tmp = tmp_path / "models" / ".tmp-x"
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text("{}")
    (tmp / "model.safetensors").write_bytes(b"weights")
    seal_folder(tmp, "0123456789abcdef")
    dest = tmp.rename(tmp_path / "models" / "0123456789abcdef")
    assert verify_folder(dest)
    (dest / "model.safetensors").write_bytes(b"planted")
    assert not verify_folder(dest)
    planted = tmp_path / "models" / "fedcba9876543210"  # no seal at all
    shutil.copytree(tmp_path / "models" / "0123456789abcdef", planted)
    (planted / ".qrecipe-seal.json").unlink()
    assert not verify_folder(planted)
    moved = tmp_path / "models" / "1111111111111111"  # a sealed entry under another key
    (dest / "model.safetensors").write_bytes(b"weights")
    assert verify_folder(dest)
    shutil.copytree(dest, moved)
    assert not verify_folder(moved)


# --- received locks: no resolver runs, no user-only key is used ------------------------------

def test_resume_of_a_lock_with_an_env_interpolation_leaks_nothing(base, tmp_path):
    d = received(base, tmp_path)
    lock = d / "recipe.lock.yaml"
    text = lock.read_text().replace("recipe_name: default",
                                    "recipe_name: x${oc.env:QRECIPE_TEST_SECRET}")
    assert text != lock.read_text()
    lock.write_text(text)
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    p = run_cli(["resume", str(d)], env={"QRECIPE_TEST_SECRET": secret})
    refused(p, "recipe_name")
    assert secret not in p.stdout + p.stderr
    for f in tmp_path.rglob("*"):
        assert secret not in f.name
        if f.is_file() and not f.is_symlink():
            assert secret.encode() not in f.read_bytes(), f


def test_resume_never_uses_the_cache_a_lock_names(base, tmp_path, monkeypatch):
    """An old lock froze `cache`: a received one must not point the run at a cache of the
    sender's choice (planted entries). The runner is stubbed: only the config is checked."""
    from qrecipe.commands import run_command
    from qrecipe.run import runner
    d = received(base, tmp_path)
    planted = tmp_path / "planted-cache"
    lock = d / "recipe.lock.yaml"
    lock.write_text(lock.read_text() + f"cache:\n  dir: {planted}\n  enabled: true\n")
    seen = {}
    monkeypatch.setattr(runner, "run_job", lambda cfg, out, **k: seen.update(
        cache=str(cfg.cache.dir)) or "ok")
    import logging
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        assert run_command(["resume", str(d)]) == 0
    finally:  # resume's own log sinks (stderr, run.log), in this process
        for h in set(root.handlers) - set(handlers):
            root.removeHandler(h)
            h.close()
    assert seen["cache"] != str(planted) and not planted.exists()


def test_a_new_lock_freezes_neither_cache_nor_force(base):
    from omegaconf import OmegaConf
    lock = OmegaConf.load(base / "recipe.lock.yaml")
    assert "cache" not in lock and "force" not in lock


def test_inside_keeps_a_path_in_its_directory(tmp_path):
    from qrecipe.boundary.rundir import inside
    from qrecipe.errors import QRecipeError
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    assert inside(tmp_path, "a/f") == tmp_path / "a" / "f"
    assert inside(tmp_path, "a/missing") == tmp_path / "a" / "missing"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "l").symlink_to(tmp_path / "a")
    for bad in ("../x", "/etc/passwd", "a/../../x", "fifo", "l/f", "", 3, "a\x00b"):
        with pytest.raises(QRecipeError):
            inside(tmp_path, bad)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
