"""Issue 23, recipes and their routes: adversarial inputs a receiving team would meet (recipe
folders, run directories' locks, packs, path arguments), each through a real entry point
(`qrecipe.cli.main` in this process, or `python -m qrecipe` where the process matters: callbacks,
packs, recursion). A refusal is exit 2 and ONE stderr line starting `error: ` naming the key or
file, no traceback; a payload that would run code leaves no PWNED marker; the secret in
QRECIPE_TEST_SECRET appears in no output, file or file name. CPU only, config only: fast."""
from __future__ import annotations

import os
import pickle
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from recipe_pack import BASE, build_wheel, install, team_recipe

SECRET_VAR = "QRECIPE_TEST_SECRET"
SECRET = f"s3cr3t-{secrets.token_hex(8)}"
ENV_REF = "${oc.env:" + SECRET_VAR + "}"
HEAD = "# @package _global_\ndefaults:\n  - override /method: rtn\nrecipe_name: bad\n"


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv(SECRET_VAR, SECRET)


def cli(argv, capsys, env=None):
    """`qrecipe ARGV` in this process: (exit code, stdout, stderr)."""
    from qrecipe.cli import main
    capsys.readouterr()
    old_argv, old_env = sys.argv, dict(os.environ)
    sys.argv = ["qrecipe", *map(str, argv)]
    os.environ.update(env or {})
    try:
        main()
        rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)
    out, err = capsys.readouterr()
    return rc, out, err


def proc(argv, env=None, cwd=ROOT, timeout=120):
    """`python -m qrecipe ARGV` in a fresh interpreter: (exit code, stdout, stderr)."""
    e = dict(os.environ, **(env or {}))
    p = subprocess.run([sys.executable, "-m", "qrecipe", *map(str, argv)], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def refused(result, *words):
    """Exit 2, one `error: ` line naming `words`, no traceback, nothing on stdout."""
    rc, out, err = result
    lines = err.splitlines()
    assert rc == 2, (rc, out[-500:], err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert "Traceback" not in out + err and out == "", out[-500:]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def no_secret(tmp_path, *texts):
    """The secret is in no text given, no file under tmp_path and no file name there."""
    for t in texts:
        assert SECRET not in t
    for p in Path(tmp_path).rglob("*"):
        assert SECRET not in p.name, p
        if p.is_file() and not p.is_symlink():
            assert SECRET.encode() not in p.read_bytes(), p


def folder(tmp_path, name, text, sub=""):
    d = tmp_path / "received" / sub if sub else tmp_path / "received"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.yaml").write_text(text)
    return tmp_path / "received"


def callback(marker):
    """A hydra: block whose callback would copy a file to `marker` when Hydra builds it."""
    return ("hydra:\n  callbacks:\n    pwn:\n      _target_: shutil.copyfile\n"
            f"      src: {ROOT / 'pyproject.toml'}\n      dst: {marker}\n")


def a_lock(run_dir: Path, **replace) -> Path:
    """A real lock (frozen.write_lock of the shipped RTN recipe) with text replaced, in an
    intact run directory (manifest written), as a received run directory would be."""
    from conftest import compose

    from qrecipe.recipes.frozen import write_lock
    from qrecipe.record.outputs import write_manifest
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = write_lock(run_dir, compose(["+recipe=smollm2_rtn_w4"]))
    text = lock.read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    lock.write_text(text)
    write_manifest(run_dir)
    return lock


# ---- routes that would hand Hydra a folder past the safe loader --------------------------

@pytest.mark.parametrize("spelling", [["--config-dir", "{d}"], ["-cd", "{d}"],
                                      ["--config-dir={d}"], ["--config-d", "{d}"]])
def test_config_dir_recipe_folder_with_a_callback_is_refused(spelling, tmp_path):
    marker = tmp_path / "PWNED"
    d = folder(tmp_path, "evil", HEAD + callback(marker), sub="recipe")
    argv = [a.format(d=d) for a in spelling]
    line = refused(proc([*argv, "+recipe=evil", "dry_run=true",
                         f"hydra.run.dir={tmp_path / 'run'}"]),
                   "--config-dir takes a run directory with recipe.lock.yaml",
                   "QRECIPE_RECIPE_PATH")
    assert str(d) in line and not marker.exists() and not (tmp_path / "run").exists()


def test_config_dir_primary_config_with_a_callback_is_refused(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    d = folder(tmp_path, "evil", "recipe_name: evil\n" + callback(marker))
    refused(cli(["--config-dir", d, "--config-name", "evil", "dry_run=true"], capsys),
            "--config-dir takes a run directory")
    assert not marker.exists()


@pytest.mark.parametrize("override", ["hydra.searchpath=[file://{d}]",
                                      "+hydra.searchpath=[file://{d}]",
                                      "++hydra.searchpath=[file://{d}]",
                                      "hydra/searchpath=[file://{d}]"])
def test_searchpath_folder_with_a_callback_is_refused(override, tmp_path):
    marker = tmp_path / "PWNED"
    d = folder(tmp_path, "evil", HEAD + callback(marker), sub="recipe")
    refused(proc(["+recipe=evil", override.format(d=d), "dry_run=true",
                  f"hydra.run.dir={tmp_path / 'run'}"]),
            "hydra.searchpath is not accepted", "QRECIPE_RECIPE_PATH")
    assert not marker.exists()


def test_searchpath_is_refused_in_show_and_validate_overrides(tmp_path, capsys):
    d = folder(tmp_path, "evil", HEAD, sub="recipe")
    for command in ("show", "validate"):
        refused(cli([command, "smollm2_rtn_w4", f"hydra.searchpath=[file://{d}]"], capsys),
                "hydra.searchpath is not accepted")


@pytest.mark.parametrize("spelling", [["-cp", "{d}"], ["--config-path", "{d}"],
                                      ["--config-path={d}"]])
def test_config_path_is_refused(spelling, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    d = folder(tmp_path, "config", "recipe_name: evil\n" + callback(marker))
    refused(cli([*(a.format(d=d) for a in spelling), "dry_run=true"], capsys),
            "--config-path is not accepted", "QRECIPE_RECIPE_PATH")
    assert not marker.exists()


def test_experimental_rerun_never_unpickles(tmp_path, capsys):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))
    (tmp_path / "config.pickle").write_bytes(pickle.dumps(Payload()))
    refused(cli(["--experimental-rerun", tmp_path / "config.pickle"], capsys),
            "--experimental-rerun is not accepted")
    assert not marker.exists()


def test_a_lock_dir_shares_nothing_else_with_hydra(tmp_path, capsys):
    """The lock route works, but the run directory's other files are not composable."""
    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    a_lock(run)
    (run / "recipe").mkdir()
    (run / "recipe" / "evil.yaml").write_text(HEAD + callback(marker))
    refused(cli(["--config-dir", run, "--config-name", "recipe.lock", "+recipe=evil",
                 "dry_run=true", f"hydra.run.dir={tmp_path / 'again'}"], capsys),
            "evil")
    assert not marker.exists() and not (tmp_path / "again").exists()


# ---- locks from received run directories ------------------------------------------------

def test_lock_with_env_interpolation_via_config_dir(tmp_path, capsys):
    run = tmp_path / "run"
    a_lock(run, **{"notes: ''": f"notes: {ENV_REF}"})
    result = cli(["--config-dir", run, "--config-name", "recipe.lock", "dry_run=true",
                  f"hydra.run.dir={tmp_path / 'again'}"], capsys)
    refused(result, "recipe.lock.yaml", "notes", "oc.env")
    no_secret(tmp_path, *result[1:])


def test_lock_with_env_interpolation_via_reproduce(tmp_path, capsys):
    run = tmp_path / "run"
    a_lock(run, **{"recipe_name: smollm2_rtn_w4": f"recipe_name: {ENV_REF}"})
    result = cli(["reproduce", run, "--out", tmp_path / "again"], capsys)
    refused(result, "recipe.lock.yaml", "oc.env")
    no_secret(tmp_path, *result[1:])
    assert not (tmp_path / "again").exists()


def test_lock_with_a_callback_in_its_hydra_block(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    a_lock(run, **{"hydra:\n": "hydra:\n  job:\n    name: x\n"})
    refused(cli(["--config-dir", run, "--config-name", "recipe.lock", "dry_run=true",
                 f"hydra.run.dir={tmp_path / 'again'}"], capsys), "hydra")
    lock = a_lock(tmp_path / "run2")
    assert lock.read_text().endswith("_target_: qrecipe.run.rundir.OutputCheck\n")
    lock.write_text(lock.read_text() + "    pwn:\n      _target_: shutil.copyfile\n"
                    f"      src: {ROOT / 'pyproject.toml'}\n      dst: {marker}\n")
    refused(cli(["--config-dir", tmp_path / "run2", "--config-name", "recipe.lock",
                 "dry_run=true", f"hydra.run.dir={tmp_path / 'again'}"], capsys), "hydra")
    assert not marker.exists() and not (tmp_path / "again").exists()


def test_lock_user_only_keys_are_dropped_not_used(tmp_path, capsys):
    """An old lock froze cache.* (and may say force): re-running it uses this machine's cache
    and never the lock's, and the output goes where a normal run's would."""
    import yaml
    run = tmp_path / "run"
    lock = a_lock(run)
    body = yaml.safe_load(lock.read_text())
    body.update(force=True, cache={"dir": str(tmp_path / "planted"), "enabled": True})
    lock.write_text(yaml.safe_dump(body))
    rc, out, err = cli(["--config-dir", run, "--config-name", "recipe.lock", "--cfg", "job"],
                       capsys)
    assert rc == 0, err
    assert str(tmp_path / "planted") not in out and "force: false" in out
    rc, out, err = proc(["-cd", run, "-cn", "recipe.lock", "dry_run=true"], cwd=tmp_path,
                        env={"PYTHONPATH": str(ROOT)})
    assert rc == 0, err[-2000:]
    # where a normal run of the recipe goes (a dry run leaves its folder empty), not
    # Hydra's outputs/DATE/TIME
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["runs"]
    assert (tmp_path / "outputs" / "runs" / "smollm2_rtn_w4").is_dir()
    assert not (tmp_path / "planted").exists()


def test_the_private_copy_is_private_and_removed(tmp_path, monkeypatch):
    from qrecipe.recipes import routes
    run = tmp_path / "run"
    a_lock(run)
    route = routes.hydra_argv(["--config-dir", str(run), "--config-name", "recipe.lock",
                               "--cfg", "job"])
    try:
        assert oct(route.private_dir.stat().st_mode & 0o777) == "0o700"
        assert [p.name for p in route.private_dir.iterdir()] == ["recipe.lock.yaml"]
        assert f"--config-dir={route.private_dir}" in route.argv
        assert "--cfg=job" in route.argv and "--config-name=recipe.lock" in route.argv
        assert not any(str(run) in a for a in route.argv)
    finally:
        route.cleanup()
    assert not route.private_dir.exists()


# ---- path arguments are never interpolated ----------------------------------------------

def test_reproduce_dir_with_env_interpolation(tmp_path, capsys):
    run = tmp_path / ENV_REF.replace("/", "_")
    a_lock(run)
    result = cli(["reproduce", run], capsys)
    refused(result, "'${' is not allowed in a path argument", "DIR")
    no_secret(tmp_path, *result[1:])


def test_reproduce_out_with_env_interpolation(tmp_path, capsys):
    run = tmp_path / "run"
    a_lock(run)
    result = cli(["reproduce", run, "--out", tmp_path / f"x{ENV_REF}"], capsys)
    refused(result, "'${' is not allowed in a path argument", "--out")
    no_secret(tmp_path, *result[1:])


@pytest.mark.parametrize("argv", [["validate", "{d}/x{ref}.yaml"], ["show", "x{ref}"],
                                  ["--config-dir", "{d}/{ref}", "--config-name", "recipe.lock"]])
def test_path_arguments_with_env_interpolation(argv, tmp_path, capsys):
    d = tmp_path / "p"
    d.mkdir()
    (d / f"x{ENV_REF}.yaml").write_text(BASE)
    result = cli([a.format(d=d, ref=ENV_REF) for a in argv], capsys)
    refused(result, "'${' is not allowed in a path argument")
    no_secret(tmp_path, *result[1:])


def test_override_value_quotes_a_path_hydra_reads_back():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from qrecipe.boundary.pathargs import override_value
    parser = OverridesParser.create()
    for path in ["/tmp/a b,c=d'e", "a\\", "x\\'y", "/r/[1]{2}"]:
        assert parser.parse_override("k=" + override_value(path, "X")).value() == path


# ---- user-only keys --------------------------------------------------------------------

USER_ONLY = {
    "force": (HEAD + "force: true\n", "force"),
    "cache.dir": (HEAD + "cache:\n  dir: /tmp/planted\n", ": cache: a user-only key"),
    "cache in sweep params": (HEAD + "hydra:\n  sweeper:\n    params:\n      cache.dir: /a,/b\n",
                              "hydra.sweeper.params.cache.dir"),
    "model.allow_pickle": (HEAD + "model:\n  allow_pickle: true\n", "model.allow_pickle"),
    "trust_remote_code in sweep params": (HEAD + "hydra:\n  sweeper:\n    params:\n"
                                          "      +trust_remote_code: 'true'\n",
                                          "trust_remote_code"),
    "hydra.run.dir": (HEAD + "hydra:\n  run:\n    dir: /tmp/elsewhere\n", "hydra.run"),
}


@pytest.mark.parametrize("case", sorted(USER_ONLY))
def test_user_only_key_in_a_recipe_is_refused(case, tmp_path, capsys):
    text, key = USER_ONLY[case]
    d = folder(tmp_path, "bad", text)
    env = {"QRECIPE_RECIPE_PATH": str(d)}
    for argv in (["+recipe=bad", "dry_run=true", f"hydra.run.dir={tmp_path / 'run'}"],
                 ["-m", "+recipe=bad", "dry_run=true", f"hydra.sweep.dir={tmp_path / 'sw'}"],
                 ["validate", d / "bad.yaml"], ["show", "bad"]):
        line = refused(cli(argv, capsys, env), key)
        assert str(d / "bad.yaml") in line and ("user-only" in line or "hydra" in key)
    assert not (tmp_path / "run").exists() and not (tmp_path / "sw").exists()


def test_no_shipped_recipe_sets_a_user_only_key():
    from omegaconf import OmegaConf

    from qrecipe.boundary.userkeys import user_only
    from qrecipe.recipes.safety import _walk
    for f in sorted((ROOT / "recipes").glob("*.yaml")):
        body = OmegaConf.to_container(OmegaConf.load(f), resolve=False)
        body.pop("defaults", None)
        assert [k for k, _ in _walk(body) if user_only(k)] == [], f


# ---- YAML limits --------------------------------------------------------------------------

def _bomb(levels=25):
    lines = ["# @package _global_", "recipe_name: bomb", "a0: &a0 [x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


LIMITS = {
    "alias bomb": (_bomb(), "alias bomb"),
    "too many aliases": ("# @package _global_\nrecipe_name: many\nx: &x 1\nl: ["
                         + ", ".join(["*x"] * 51) + "]\n", "more than 50 aliases"),
    "10 MB": ("# @package _global_\nnotes: '" + "x" * (10 * 1024 * 1024) + "'\n",
              "more than the 262144"),
    "deep nesting": ("# @package _global_\nnotes: " + "[" * 100 + "]" * 100 + "\n",
                     "nested deeper than 32"),
    "python tag": ("# @package _global_\nnotes: !!python/object/apply:os.system "
                   "['touch PWNED']\n", "YAML tag"),
    "any tag": ("# @package _global_\nnotes: !!binary aGVsbG8=\n", "YAML tag"),
    "ESC in meta.description": ('# @package _global_\nrecipe_name: esc\nmeta:\n'
                                '  description: "\\e[2K\\rproject  the maintainers"\n',
                                "meta.description: a control character"),
    "raw ESC in a comment": ("# @package _global_\n# \x1b]0;title\x07\nrecipe_name: x\n",
                             "line 2: control character \\x1b"),
    "CR rewriting the line": ('# @package _global_\nrecipe_name: cr\nmeta:\n'
                              '  description: "x\\rproject"\n', "control character"),
    "not UTF-8": ("", "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(LIMITS))
def test_yaml_limits_refuse_in_one_line(case, tmp_path, capsys):
    text, words = LIMITS[case]
    d = tmp_path / "received"
    d.mkdir()
    f = d / "bad.yaml"
    if case == "not UTF-8":
        f.write_bytes(b"# @package _global_\nnotes: caf\xe9\n")
    else:
        f.write_text(text)
    start = time.monotonic()
    line = refused(cli(["+recipe=bad", "--cfg", "job"], capsys,
                       {"QRECIPE_RECIPE_PATH": str(d)}), words, str(f))
    assert time.monotonic() - start < 3, "refused from the event stream, never expanded"
    assert "\x1b" not in line and "\r" not in line
    rc, out, err = cli(["recipes"], capsys, {"QRECIPE_RECIPE_PATH": str(d)})
    row = next(r for r in out.splitlines() if r.startswith("bad "))
    assert rc == 0 and "REFUSED" in row and "\x1b" not in out and "\r" not in out
    assert not (tmp_path / "PWNED").exists() and not (ROOT / "PWNED").exists()


def test_alias_bomb_is_refused_in_milliseconds(tmp_path):
    from qrecipe.errors import QRecipeError
    from qrecipe.recipes.safety import load_recipe
    f = tmp_path / "bomb.yaml"
    f.write_text(_bomb(40))  # 2**40 values if expanded
    start = time.monotonic()
    with pytest.raises(QRecipeError, match="alias bomb"):
        load_recipe(f)
    assert time.monotonic() - start < 0.5


def test_control_characters_in_a_recipe_file_name_are_escaped_in_listings(tmp_path, capsys):
    d = tmp_path / "received"
    d.mkdir()
    (d / "evil\x1b[2K\rproject.yaml").write_text(team_recipe("evil", "fine"))
    (d / "two\nlines.yaml").write_text(team_recipe("two", "fine"))
    rc, out, err = cli(["recipes", "--paths"], capsys, {"QRECIPE_RECIPE_PATH": str(d)})
    assert rc == 0, err
    assert "\x1b" not in out and "\r" not in out
    assert "evil\\x1b[2K\\rproject" in out and "two\\nlines" in out
    assert all(ln.startswith(("NAME", "smollm2", "gemma3", "awq", "bnb", "gptq", "evil", "two"))
               for ln in out.splitlines()), out


# ---- recipes that include themselves -------------------------------------------------------

INCLUDES = {
    "self": {"selfy": "  - /recipe: selfy\n"},
    "self, relative name": {"selfy": "  - selfy\n"},
    "mutual": {"selfy": "  - /recipe: other\n", "other": "  - /recipe: selfy\n"},
    "three": {"selfy": "  - /recipe: b\n", "b": "  - override /recipe: c\n",
              "c": "  - /recipe: [selfy]\n"},
}


@pytest.mark.parametrize("case", sorted(INCLUDES))
def test_a_recipe_including_itself_is_one_line(case, tmp_path):
    d = tmp_path / "received"
    d.mkdir()
    for name, entry in INCLUDES[case].items():
        (d / f"{name}.yaml").write_text(f"# @package _global_\ndefaults:\n{entry}"
                                        f"recipe_name: {name}\n")
    env = {"QRECIPE_RECIPE_PATH": str(d)}
    refused(proc(["+recipe=selfy", "--cfg", "job"], env=env), "includes itself", "selfy")
    refused(proc(["show", "selfy"], env=env), "includes itself")


# ---- the one-line message ------------------------------------------------------------------

def test_a_refused_recipe_is_reported_once(tmp_path, capsys):
    """Was `error: error: MSG: MSG` (hydra_source's prefix plus Hydra's context)."""
    d = folder(tmp_path, "bad", HEAD + f"notes: {ENV_REF}\n")
    line = refused(cli(["+recipe=bad", "--cfg", "job"], capsys,
                       {"QRECIPE_RECIPE_PATH": str(d)}), "notes", "oc.env")
    assert line.count("error:") == 1 and line.count(str(d / "bad.yaml")) == 1, line


# ---- packs ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def packs_dir(tmp_path_factory):
    """Sites: `clash` (two distributions declaring pack `team`), `evil` (a pack whose
    __init__ writes PWNED when imported), `editable` (its package outside site-packages, found
    only through the import system, as an editable install is)."""
    base = tmp_path_factory.mktemp("packs")
    marker = base / "PWNED"
    code = f"open({str(marker)!r}, 'w').write('imported')\n".encode()
    recipes = {"team_rtn": team_recipe("team_rtn", "a team recipe")}
    sites = {}
    for dist, pkg in (("team_recipes_a", "team_a"), ("team_recipes_b", "team_b")):
        sites[dist] = install(build_wheel(base, recipes, dist=dist, package=pkg, pack="team"),
                              base / dist)
    sites["evil"] = install(build_wheel(base, {"evil_rtn": team_recipe("evil_rtn", "ok")},
                                        dist="evil_recipes", package="evil_pack", pack="evil",
                                        init=code, extra={"evil_pack/util.py": code}),
                            base / "evil")
    ed = base / "editable"
    install(build_wheel(base, {"ed_rtn": team_recipe("ed_rtn", "editable")}, dist="ed_recipes",
                        package="ed_pack", pack="ed", init=code), ed)
    (ed / "ed_pack").rename(base / "ed_src")  # the package lives elsewhere (the source tree)
    (base / "src").mkdir()
    (base / "ed_src").rename(base / "src" / "ed_pack")
    sites["editable"] = ed
    sites["editable_src"] = base / "src"
    return sites, marker


def _pythonpath(*sites):
    return {"PYTHONPATH": os.pathsep.join([*map(str, sites), str(ROOT)])}


def test_two_packs_of_one_name_are_an_error_naming_both(packs_dir):
    sites, _ = packs_dir
    env = _pythonpath(sites["team_recipes_a"], sites["team_recipes_b"])
    for argv in (["+recipe=team/team_rtn", "--cfg", "job"], ["+recipe=team_rtn", "--cfg", "job"],
                 ["show", "team/team_rtn"], ["validate", "team_rtn"]):
        refused(proc(argv, env=env), "pack name 'team' is declared by 2 installed "
                "distributions", "team_recipes_a 0.1.0", "team_recipes_b 0.1.0")
    rc, out, err = proc(["recipes"], env=env)
    assert rc == 0 and "CLASH: declared by team_recipes_a" in out, err
    rc, out, err = proc(["+recipe=smollm2_rtn_w4", "--cfg", "job"], env=env)
    assert rc == 0, err  # the rest of qrecipe still works


def test_a_pack_shipping_code_is_listed_as_such_and_never_imported(packs_dir):
    sites, marker = packs_dir
    env = _pythonpath(sites["evil"])
    rc, out, err = proc(["recipes"], env=env)
    row = next(r for r in out.splitlines() if r.startswith("evil_rtn"))
    assert rc == 0 and "pack evil (ships Python code: installing it trusted it)" in row, out
    for argv in (["+recipe=evil/evil_rtn", "--cfg", "job"], ["show", "evil/evil_rtn"],
                 ["validate", "evil_rtn"]):
        rc, out, err = proc(argv, env=env)
        assert rc == 0 and "evil_rtn" in out, err[-2000:]
    assert not marker.exists()


def test_an_editable_pack_is_found_without_importing_it(packs_dir):
    sites, marker = packs_dir
    env = _pythonpath(sites["editable"], sites["editable_src"])
    rc, out, err = proc(["recipes"], env=env)
    row = next(r for r in out.splitlines() if r.startswith("ed_rtn"))
    assert rc == 0 and "pack ed (ships Python code" in row, out
    rc, out, err = proc(["+recipe=ed/ed_rtn", "--cfg", "job"], env=env)
    assert rc == 0 and "recipe_name: ed_rtn" in out, err[-2000:]
    assert not marker.exists()


def test_a_data_only_pack_is_not_marked(packs_dir):
    sites, _ = packs_dir
    rc, out, err = proc(["recipes"], env=_pythonpath(sites["team_recipes_a"]))
    row = next(r for r in out.splitlines() if r.startswith("team_rtn"))
    assert rc == 0 and row.split()[1:3] == ["pack", "team"] and "ships" not in row, row


def test_a_pack_recipe_setting_a_user_only_key_is_refused(tmp_path):
    site = install(build_wheel(tmp_path, {"forced": team_recipe("forced", "x") + "force: true\n"},
                               dist="forced_recipes", package="forced_pack", pack="forced"),
                   tmp_path / "site")
    refused(proc(["+recipe=forced/forced", "dry_run=true", f"hydra.run.dir={tmp_path / 'r'}"],
                 env=_pythonpath(site)), "force", "user-only")


# ---- run directories handed to the lock route are data --------------------------------------

def test_a_lock_through_a_symlink_is_refused(tmp_path, capsys):
    """A received directory whose lock links elsewhere (here to a file holding the secret)."""
    (tmp_path / "secret.yaml").write_text(f"notes: {SECRET}\n")
    run = tmp_path / "run"
    a_lock(run)
    (run / "recipe.lock.yaml").unlink()
    (run / "recipe.lock.yaml").symlink_to(tmp_path / "secret.yaml")
    for argv in (["--config-dir", run, "--config-name", "recipe.lock", "--cfg", "job"],
                 ["reproduce", run, "--out", tmp_path / "again"]):
        result = cli(argv, capsys)
        refused(result, "symbolic link")
        assert SECRET not in result[1] + result[2]
    assert not (tmp_path / "again").exists()
