"""The one rule for "is this run directory complete", the claim a run takes on its directory
(fresh / skip / resume / refuse / force), and SIGTERM turned into an interruption."""
from __future__ import annotations

import json
import os
import signal

import pytest
from conftest import compose
from omegaconf import OmegaConf

from qrecipe.errors import QRecipeError
from qrecipe.recipes import frozen
from qrecipe.record import outputs
from qrecipe.record.outputs import run_state
from qrecipe.run.rundir import Claim, identity

CFG = {"recipe_name": "r", "bits": {"width": 4}, "cache": {"dir": "/somewhere"}}


@pytest.fixture(scope="module")
def cfg():
    """A composed config: its lock is what a run writes (read back through the safe loader)."""
    return compose(["recipe_name=r"])


def started(d, cfg, stages=(), complete=False):
    (d / ".hydra").mkdir(parents=True)
    (d / "run.log").write_text("log")
    frozen.write_lock(d, cfg)
    for s in stages:
        outputs.write_json(d / outputs.STAGES / f"{s}.json", {}, root=d)
    if complete:
        outputs.write_manifest(d)
    return d


def test_states(tmp_path, cfg):
    assert run_state(tmp_path / "nope").status == "absent"
    e = tmp_path / "e"
    (e / ".hydra").mkdir(parents=True)
    (e / "run.log").write_text("")
    (e / outputs.ERROR).write_text('{"error": "bad"}')
    assert run_state(e).status == "empty" and run_state(e).error == "bad"
    i = started(tmp_path / "i", cfg, stages=("quantize",))
    assert run_state(i).incomplete and run_state(i).stages == ("quantize",)
    assert "finished stages: quantize" in run_state(i).describe()
    c = started(tmp_path / "c", cfg, complete=True)
    assert run_state(c).complete
    (c / outputs.MANIFEST).write_text("{truncated")  # unreadable manifest: not complete
    assert run_state(c).incomplete
    f = tmp_path / "f"
    f.mkdir()
    (f / "notes.txt").write_text("mine")
    assert run_state(f).status == "foreign"
    (tmp_path / "file").write_text("x")
    assert run_state(tmp_path / "file").status == "foreign"


def test_claim_decisions(tmp_path, cfg):
    fresh = Claim(tmp_path / "new")
    assert fresh.decide(cfg) == "fresh" and fresh.owned
    fresh.release()

    inc = started(tmp_path / "inc", cfg, stages=("quantize",))
    c = Claim(inc)
    elsewhere = compose(["recipe_name=r", "cache.dir=/elsewhere"])
    assert c.decide(elsewhere) == "resume"  # the cache is not part of the config's identity
    c.release()

    done = started(tmp_path / "done", cfg, complete=True)
    before = sorted(p.name for p in done.iterdir())
    c = Claim(done)
    assert c.fd is None  # a complete run's directory gets no lock file
    assert c.decide(cfg) == "skip"
    with pytest.raises(QRecipeError, match="complete run of another config"):
        c.decide(compose(["recipe_name=r", "bits=w8"]))
    c.release()
    assert sorted(p.name for p in done.iterdir()) == before

    c = Claim(done)
    assert c.decide(compose(["recipe_name=r", "force=true"])) == "fresh"
    aside = [d for d in tmp_path.iterdir() if d.name.startswith("done.replaced-")]
    assert len(aside) == 1 and (aside[0] / outputs.MANIFEST).is_file()
    assert not (done / outputs.MANIFEST).exists() and c.fd is not None
    c.release()


def test_identity_ignores_cache_force_and_hydra():
    a = identity(OmegaConf.create({**CFG, "force": True, "dry_run": True}))
    assert a == identity({**CFG, "cache": {"dir": "/x"}, "hydra": {}, "defaults": []})
    trusting = {**CFG, "trust_remote_code": True, "model": {"path": "m", "allow_pickle": True}}
    assert identity(trusting) == {**a, "model": {"path": "m"}}
    assert a != identity({**CFG, "seed": 1})
    assert identity({**CFG, "model": {"path": "a"}}) != identity({**CFG, "model": {"path": "b"}})


def test_two_claims_on_one_directory(tmp_path):
    first = Claim(tmp_path / "d")
    try:
        with pytest.raises(QRecipeError, match=f"pid {os.getpid()}"):
            Claim(tmp_path / "d")
    finally:
        first.release()
    Claim(tmp_path / "d").release()  # free again once the first run is gone


def test_sigterm_becomes_an_interruption():
    from qrecipe.run.interrupt import Interrupted, exit_code, sigterm_raises
    with pytest.raises(Interrupted) as e:
        with sigterm_raises():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**6):
                pass
    assert exit_code(e.value) == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored on the way out


def test_lock_file_of_a_finished_run_is_not_in_the_manifest(tmp_path, cfg):
    d = started(tmp_path / "r", cfg)
    (d / outputs.RUN_LOCK).write_text("123")
    outputs.write_manifest(d)
    assert outputs.RUN_LOCK not in json.loads((d / outputs.MANIFEST).read_text())["files"]
