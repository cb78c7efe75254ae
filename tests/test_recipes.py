"""Recipes that travel: outside folders (QRECIPE_RECIPE_PATH) and installed packs (a real wheel,
pip-installed), listed, shown and validated; name clashes; every unsafe construct refused by the
one loader with exit 2, with and without dry_run; recipe metadata; old locks. Fast: config only
(the SmolLM2 runs are in test_recipes_e2e.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT
from recipe_pack import BASE, PACK, pack_site, team_recipe  # noqa: F401 (fixture)


def cli(argv, capsys, env=None):
    """`qrecipe ARGV` in this process (Hydra's entry point included): (exit code, out, err)."""
    from qrecipe.cli import main
    old_argv, old_env = sys.argv, dict(os.environ)
    sys.argv = ["qrecipe", *argv]
    os.environ.update(env or {})
    try:
        main()
        rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def team(tmp_path):
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / "team_rtn.yaml").write_text(team_recipe("team_rtn", "the team's RTN baseline"))
    return folder


@pytest.fixture
def with_pack(pack_site, monkeypatch):
    monkeypatch.syspath_prepend(str(pack_site))
    return pack_site


# ---- sources -----------------------------------------------------------------------------

def test_folder_recipe_is_listed_shown_and_validated(team, capsys):
    env = {"QRECIPE_RECIPE_PATH": str(team)}
    rc, out, _ = cli(["recipes"], capsys, env)
    line = next(l for l in out.splitlines() if l.startswith("team_rtn"))
    assert rc == 0 and f"folder {team}" in line and "the team's RTN baseline" in line
    assert any(l.startswith("smollm2_gptq_w4 ") and " project " in l for l in out.splitlines())
    rc, out, _ = cli(["show", "team_rtn"], capsys, env)
    assert rc == 0 and str(team / "team_rtn.yaml") in out and "recipe_name: team_rtn" in out
    assert "description: the team's RTN baseline" in out and "name: rtn" in out
    rc, out, err = cli(["validate", "team_rtn"], capsys, env)
    assert rc == 0, err
    assert out.startswith("valid: team_rtn: rtn via gptqmodel, w4 g64")
    rc, out, err = cli(["validate", str(team / "team_rtn.yaml")], capsys)  # by path, no env
    assert rc == 0 and out.startswith("valid: team_rtn"), err


def test_folder_recipe_composes_through_the_hydra_entry_point(team, capsys):
    rc, out, err = cli(["--cfg", "job", "+recipe=team_rtn", "bits=w8"], capsys,
                       {"QRECIPE_RECIPE_PATH": str(team)})
    assert rc == 0, err
    assert "recipe_name: team_rtn" in out and "width: 8" in out


def test_pack_recipe_is_listed_shown_and_validated(with_pack, capsys):
    rc, out, _ = cli(["recipes"], capsys)
    line = next(l for l in out.splitlines() if l.startswith("pack_rtn"))
    assert f"pack {PACK}" in line and "RTN from the team pack" in line
    pack_file = with_pack / "qrecipe_teampack" / "pack_rtn.yaml"
    for name in ("pack_rtn", f"{PACK}/pack_rtn"):
        rc, out, err = cli(["show", name], capsys)
        assert rc == 0 and str(pack_file) in out and f"(pack {PACK})" in out, err
        rc, out, err = cli(["validate", name], capsys)
        assert rc == 0 and out.startswith("valid: pack_rtn"), err
    rc, out, err = cli(["--cfg", "job", f"+recipe={PACK}/pack_rtn"], capsys)
    assert rc == 0 and "recipe_name: pack_rtn" in out, err


def test_pack_is_found_by_a_fresh_interpreter_through_pythonpath(pack_site):
    """What a user with the pack pip-installed gets: the real entry point machinery."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pack_site), str(ROOT)]))
    p = subprocess.run([sys.executable, "-m", "qrecipe", "recipes"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert any(l.startswith("pack_rtn") and f"pack {PACK}" in l for l in p.stdout.splitlines())


def test_name_in_two_places_is_an_error_naming_both_files(team, with_pack, capsys):
    (team / "smollm2_nf4.yaml").write_text(team_recipe("smollm2_nf4", "shadow"))
    env = {"QRECIPE_RECIPE_PATH": str(team)}
    project = ROOT / "recipes"
    for name, other in (("smollm2_nf4", team / "smollm2_nf4.yaml"),
                        ("smollm2_int8", with_pack / "qrecipe_teampack" / "smollm2_int8.yaml")):
        for argv in ([f"+recipe={name}", "dry_run=true"], [f"+recipe={name}"],
                     ["validate", name], ["show", name]):
            rc, _, err = cli(argv, capsys, env)
            assert rc == 2, (argv, err)
            assert str(project / f"{name}.yaml") in err and str(other) in err, err
            assert "defined in 2 places" in err and "Traceback" not in err
    rc, out, _ = cli(["recipes"], capsys, env)
    assert rc == 0 and "smollm2_nf4 (CLASH: 2 places)" in out
    # an explicit pick still works
    rc, out, _ = cli(["--cfg", "job", f"+recipe={PACK}/smollm2_int8"], capsys, env)
    assert rc == 0 and "description: clashes with project" in out
    rc, out, _ = cli(["--cfg", "job", "+recipe=project/smollm2_int8"], capsys, env)
    assert rc == 0 and "LLM.int8 on SmolLM2" in out


def test_missing_recipe_path_folder_is_a_user_error(tmp_path, capsys):
    rc, _, err = cli(["recipes"], capsys, {"QRECIPE_RECIPE_PATH": str(tmp_path / "nope")})
    assert rc == 2 and "QRECIPE_RECIPE_PATH" in err and "not a folder" in err


def test_a_searchpath_override_is_refused_pointing_to_the_recipe_path(team, capsys):
    """hydra.searchpath would make the folder's files composable past the safe loader
    (issue 23): one line saying where recipe folders go instead."""
    rc, out, err = cli(["--cfg", "job", "+recipe=smollm2_nf4", f"hydra.searchpath=[file://{team}]"],
                       capsys)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("error: hydra.searchpath is not accepted")
    assert "QRECIPE_RECIPE_PATH" in err


# ---- safety ------------------------------------------------------------------------------

HEAD = "# @package _global_\ndefaults:\n  - override /method: rtn\nrecipe_name: bad\n"
UNSAFE = {
    "target": (HEAD + "method:\n  extra:\n    deep:\n      _target_: os.getcwd\n",
               "method.extra.deep._target_"),
    "partial": (HEAD + "model:\n  _partial_: true\n", "model._partial_"),
    "args": (HEAD + "bits:\n  _args_: [1]\n", "bits._args_"),
    "recursive": (HEAD + "eval:\n  _recursive_: false\n", "eval._recursive_"),
    "list target": (HEAD + "tags:\n  - {_target_: os.getcwd}\n", "tags[0]._target_"),
    "hydra callbacks": (HEAD + "hydra:\n  callbacks:\n    cb:\n      _target_: shutil.copyfile\n"
                        "      src: /etc/hostname\n      dst: MARKER\n", "hydra.callbacks"),
    "hydra run dir": (HEAD + "hydra:\n  run:\n    dir: /tmp/elsewhere\n", "hydra.run"),
    "hydra searchpath": (HEAD + "hydra:\n  searchpath: [file:///tmp]\n", "hydra.searchpath"),
    "hydra sweeper other": (HEAD + "hydra:\n  sweeper:\n    max_batch_size: 2\n",
                            "hydra.sweeper.max_batch_size"),
    "sweep param sets hydra": (HEAD + "hydra:\n  sweeper:\n    params:\n"
                               "      hydra.job.chdir: 'true'\n", "hydra.job.chdir"),
    "sweep param target": (HEAD + "hydra:\n  sweeper:\n    params:\n"
                           "      +method.x._target_: os.getcwd\n", "method.x._target_"),
    "defaults hydra group": ("# @package _global_\ndefaults:\n"
                             "  - override /hydra/launcher: local_parallel\nrecipe_name: bad\n",
                             "defaults[0]"),
    "defaults package move": ("# @package _global_\ndefaults:\n"
                              "  - /model@hydra.x: smollm2_135m\nrecipe_name: bad\n",
                              "defaults[0]"),
    "defaults path traversal": ("# @package _global_\ndefaults:\n"
                                "  - override /model: ../../../../tmp/payload\nrecipe_name: bad\n",
                                "defaults[0]"),
    "sweep path traversal": (HEAD + "hydra:\n  sweeper:\n    params:\n"
                             "      model: smollm2_135m,../../../tmp/payload\n",
                             "hydra.sweeper.params.model"),
    "recipe_name path": (HEAD.replace("recipe_name: bad", "recipe_name: ../../../tmp/x"),
                         "recipe_name"),
    "escaped resolver": (HEAD + "notes: \\${oc.env:HOME}\n", "notes"),
    "dotted pkg path": (HEAD + "model:\n  path: pkg://email.mime/x.gguf\n", "model.path"),
    "package header": ("# @package hydra\nrun:\n  dir: /tmp/x\n", "# @package"),
    "oc.env": (HEAD + "notes: ${oc.env:HOME}\n", "notes"),
    "oc.decode": (HEAD + "notes: \"${oc.decode:'[1]'}\"\n", "notes"),
    "custom resolver": (HEAD + "notes: ${qrecipe_dirname:x}\n", "notes"),
    "hydra resolver": (HEAD + "notes: ${hydra:runtime.cwd}\n", "notes"),
    "nested resolver": (HEAD + "notes: ${model.${oc.env:USER}}\n", "notes"),
    "env-derived reference": (HEAD + "notes: ${cache.dir}\n", "notes"),
    "interpolated defaults": ("# @package _global_\ndefaults:\n"
                              "  - override /model: ${oc.env:MODEL}\nrecipe_name: bad\n",
                              "defaults[0]"),
    "trust_remote_code": (HEAD + "model:\n  trust_remote_code: true\n",
                          "model.trust_remote_code"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_construct_refused_by_the_loader_naming_file_and_key(case, tmp_path):
    from qrecipe.recipes.safety import UnsafeRecipe, load_recipe
    text, key = UNSAFE[case]
    f = tmp_path / "bad.yaml"
    f.write_text(text.replace("MARKER", str(tmp_path / "marker")))
    with pytest.raises(UnsafeRecipe) as e:
        load_recipe(f)
    assert str(f) in str(e.value) and key in str(e.value)


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_recipe_exits_2_from_every_entry(case, tmp_path, capsys):
    text, key = UNSAFE[case]
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "marker"
    f = folder / "bad.yaml"
    f.write_text(text.replace("MARKER", str(marker)))
    env = {"QRECIPE_RECIPE_PATH": str(folder)}
    run = ["+recipe=bad", f"hydra.run.dir={tmp_path / 'run'}"]
    for argv in (run + ["dry_run=true"], run, ["validate", "bad"], ["validate", str(f)],
                 ["show", "bad"]):
        rc, out, err = cli(argv, capsys, env)
        assert rc == 2, (argv, out, err)
        assert str(f) in err and key in err and "Traceback" not in err, err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_the_issue_exploit_runs_nothing_in_a_real_process(tmp_path):
    """A callback with a real side effect (copy a file): refused before Hydra could run it."""
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "marker"
    text, _ = UNSAFE["hydra callbacks"]
    (folder / "bad.yaml").write_text(text.replace("MARKER", str(marker)))
    for extra in (["dry_run=true"], []):
        p = subprocess.run([sys.executable, "-m", "qrecipe", "+recipe=bad", *extra,
                            f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT,
                           env=dict(os.environ, QRECIPE_RECIPE_PATH=str(folder)),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "hydra.callbacks" in p.stderr, p.stderr
        assert not marker.exists()


def test_what_a_recipe_may_do_still_composes(tmp_path, capsys):
    (tmp_path / "ok.yaml").write_text(
        HEAD + "calibration:\n  seq_len: 256\neval:\n  seq_len: ${calibration.seq_len}\n"
        "notes: 'costs $5'\nhydra:\n  sweeper:\n    params:\n      bits: w4,w8\n")
    env = {"QRECIPE_RECIPE_PATH": str(tmp_path)}
    rc, out, err = cli(["--cfg", "job", "--resolve", "+recipe=ok"], capsys, env)
    assert rc == 0, err
    assert "seq_len: 256" in out.split("eval:")[1]
    rc, out, err = cli(["--cfg", "hydra", "+recipe=ok"], capsys, env)
    assert rc == 0 and "bits: w4,w8" in out, err


def test_every_shipped_recipe_passes_the_loader():
    from qrecipe.recipes.safety import load_recipe
    for f in sorted((ROOT / "recipes").glob("*.yaml")):
        cfg, head = load_recipe(f)
        assert head["package"] == "_global_", f
        assert cfg.meta.description, f"{f}: every shipped recipe carries meta.description"


@pytest.mark.parametrize("command", ["show", "validate"])
def test_unknown_recipe_is_one_line(command, capsys):
    rc, out, err = cli([command, "no_such_recipe_anywhere"], capsys)
    assert rc == 2 and out == ""
    assert err.strip() == ("error: recipe='no_such_recipe_anywhere': no such recipe; "
                           "`qrecipe recipes` lists them"), err


# ---- config-only commands stay light ----------------------------------------------------

@pytest.mark.parametrize("argv", [["recipes"], ["show", "smollm2_gptq_w4"],
                                  ["validate", "smollm2_gptq_w4"], ["verify", "/nonexistent"]])
def test_config_only_commands_do_not_import_torch(argv):
    code = ("import sys, atexit\n"
            "atexit.register(lambda: print('TORCH_LOADED' if 'torch' in sys.modules "
            "else 'TORCH_ABSENT'))\n"
            f"sys.argv=['qrecipe', *{argv!r}]\nfrom qrecipe.cli import main\nmain()\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == (2 if argv[0] == "verify" else 0), p.stderr
    assert "TORCH_ABSENT" in p.stdout


# ---- metadata ----------------------------------------------------------------------------

def _metrics(ppl=40.98, windows=8, size_mb=166.8):
    return {"eval": {"quantized": {"ppl": ppl}, "delta_ppl": ppl - 30.64,
                     "protocol": {"dataset": "file:pkg://qrecipe/texts/wikitext2_raw_test.txt",
                                  "seq_len": 512, "stride": 512, "windows": windows}},
            "size": {"model_dir_bytes": int(size_mb * 1024 * 1024)}}


def test_expectations_met_missed_and_not_comparable():
    from conftest import compose

    from qrecipe.recipes.meta import check_expectations, report_lines
    meta = compose(["+recipe=smollm2_rtn_w4"]).meta
    ok = check_expectations(meta, _metrics())
    assert ok["status"] == "met" and {c["status"] for c in ok["checks"]} == {"met"}
    bad = check_expectations(meta, _metrics(ppl=45.0))
    assert bad["status"] == "missed"
    assert [c["metric"] for c in bad["checks"] if c["status"] == "missed"] == ["ppl", "delta_ppl"]
    other = check_expectations(meta, _metrics(ppl=39.5, windows=2))
    assert other["status"] == "met"  # size still comparable; ppl on another protocol is not
    ppl = next(c for c in other["checks"] if c["metric"] == "ppl")
    assert ppl["status"] == "not comparable" and "windows 2" in ppl["why"]
    assert "| ppl | 40.98 | ±0.1 | 45.0 | missed |" in "\n".join(report_lines(bad))
    over = check_expectations(meta, _metrics(), ["+recipe=smollm2_rtn_w4", "bits=w8",
                                                 "eval.max_windows=8", "hydra.run.dir=x"])
    assert over["status"] == "not comparable"
    assert all(c["why"] == "the run overrides the recipe: bits=w8" for c in over["checks"])
    neutral = ["hardware.num_threads=2", "cache.dir=/c", "eval.speed=false", "dry_run=false"]
    assert check_expectations(meta, _metrics(), neutral)["status"] == "met"
    # computed in float32 on a CPU without fast bfloat16 (qrecipe/run/dtypes.py), saved in the
    # recipe's dtype: the same checkpoint layout, compared within the tolerance (issue 26)
    why = "model.dtype=bfloat16 runs in float32 on this CPU"
    other_dtype = check_expectations(meta, {**_metrics(), "dtype": {"used": "float32",
                                                                    "why": why}})
    assert other_dtype["status"] == "met"
    missed = check_expectations(meta, {**_metrics(ppl=45.0), "dtype": {"used": "float32",
                                                                       "why": why}})
    assert missed["status"] == "missed"
    none = check_expectations(compose(["+recipe=gptq_llama7b"]).meta, _metrics())
    assert none["status"] == "none" and report_lines(none) == []


def test_meta_is_schema_checked(tmp_path, capsys):
    (tmp_path / "typo.yaml").write_text(HEAD + "meta:\n  expected:\n    ppl: {valeu: 3}\n")
    (tmp_path / "wrongtype.yaml").write_text(HEAD + "meta:\n  expected:\n"
                                             "    ppl: {value: low, tolerance: 1}\n")
    env = {"QRECIPE_RECIPE_PATH": str(tmp_path)}
    for name, key in (("typo", "valeu"), ("wrongtype", "value")):
        rc, _, err = cli(["validate", name], capsys, env)
        assert rc == 2 and key in err, err


def test_validate_warns_when_installed_versions_differ(tmp_path, capsys):
    text = BASE.replace("torch: 2.13.0+cpu", "torch: 1.0.0")
    (tmp_path / "old.yaml").write_text(text.replace("recipe_name: smollm2_rtn_w4",
                                                    "recipe_name: old"))
    rc, out, err = cli(["validate", str(tmp_path / "old.yaml")], capsys)
    assert rc == 0 and out.startswith("valid: old")
    from qrecipe.recipes.meta import installed_version
    assert f"warning: torch: recipe tested with 1.0.0, installed {installed_version('torch')}" \
        in err
    rc, _, err = cli(["validate", "smollm2_rtn_w4"], capsys)
    assert rc == 0 and "warning" not in err  # the shipped figures match this environment


# ---- locks -------------------------------------------------------------------------------

def _lock(tmp_path):
    from conftest import compose

    from qrecipe.recipes.frozen import write_lock
    cfg = compose(["+recipe=smollm2_rtn_w4"])
    return write_lock(tmp_path, cfg)


def test_lock_carries_a_schema_version_and_passes_the_checks(tmp_path):
    from qrecipe.recipes.lock import check_lock
    from qrecipe.recipes.schema import SCHEMA_VERSION
    lock = _lock(tmp_path)
    assert f"schema_version: {SCHEMA_VERSION}" in lock.read_text()
    assert check_lock(lock).bits.group_size == 64


def test_old_lock_that_no_longer_composes_names_the_changed_key(tmp_path, capsys):
    lock = _lock(tmp_path)
    text = lock.read_text().replace("group_size: 64", "groupsize: 64")
    lock.write_text(text.replace("schema_version: 1", "schema_version: 0"))
    from qrecipe.record.outputs import write_manifest
    write_manifest(tmp_path)  # an intact directory, written by an older qrecipe
    rc, _, err = cli(["reproduce", str(tmp_path), "--out", str(tmp_path / "again")], capsys)
    assert rc == 2 and "bits.groupsize" in err and "schema version 0" in err, err
    assert "recipe.lock.yaml" in err and not (tmp_path / "again").exists()


def test_reproduce_checks_import_no_torch_before_the_run(tmp_path):
    """Everything reproduce does before the repeated run (verify, lock checks) is torch-free."""
    from qrecipe.record.outputs import write_manifest
    lock = _lock(tmp_path)
    lock.write_text(lock.read_text().replace("group_size: 64", "groupsize: 64"))
    write_manifest(tmp_path)
    code = ("import sys, atexit\n"
            "atexit.register(lambda: print('TORCH_LOADED' if 'torch' in sys.modules "
            "else 'TORCH_ABSENT'))\n"
            f"sys.argv=['qrecipe', 'reproduce', {str(tmp_path)!r}]\n"
            "from qrecipe.cli import main\nmain()\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "bits.groupsize" in p.stderr, p.stderr
    assert "TORCH_ABSENT" in p.stdout


def test_tampered_lock_is_refused_like_a_recipe(tmp_path):
    from qrecipe.recipes.lock import check_lock
    from qrecipe.recipes.safety import UnsafeRecipe
    lock = _lock(tmp_path)
    lock.write_text(lock.read_text().replace("notes: ''", "notes: ${oc.env:HOME}"))
    with pytest.raises(UnsafeRecipe, match="notes"):
        check_lock(lock)
    lock.write_text(lock.read_text().replace("  - _self_", "  - override hydra/launcher: x\n"
                                             "  - _self_"))
    with pytest.raises(UnsafeRecipe, match="defaults"):
        check_lock(lock)
