"""A fresh clone, or an installed wheel, runs alone: the texts the demo, the offline recipes and the
tests read ship inside the package (qrecipe/texts/), named by pkg:// paths that do not depend on
the working directory. Nothing here may read a folder beside the repository."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, ROOT

OFFLINE = sorted(p.stem for p in (ROOT / "recipes").glob("smollm2_*.yaml"))
SHIPPED_TEXTS = ("wikitext2_raw_test.txt", "jargon_file_4.4.7.txt", "devils_dictionary.txt")


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRECIPE_DATA")}
    env.update(extra)
    return env


def _dry_run_all(python: str, cwd: Path, env: dict) -> None:
    """Every offline recipe validates (calibration and eval files found, GGUF header read)."""
    assert OFFLINE, "no smollm2_* recipes found"
    for recipe in OFFLINE:
        p = subprocess.run([python, "-m", "qrecipe", f"+recipe={recipe}", "dry_run=true"],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"{recipe}: {p.stderr[-2000:]}"
        assert f"dry run: valid: {recipe}" in p.stderr


def test_shipped_texts_match_their_checksums():
    sums = dict(line.split()[::-1] for line in (DATA / "SHA256SUMS").read_text().splitlines())
    for name in SHIPPED_TEXTS:
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == sums[name]
    assert "CC BY-SA" in (DATA / "README.md").read_text()  # WikiText's attribution ships too


def test_no_project_file_reads_a_folder_beside_the_checkout():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    needle = "../" + "shared"  # spelled apart so this file does not match itself
    offenders = [f for f in files if (ROOT / f).is_file() and not f.endswith((".png", ".txt"))
                 and needle in (ROOT / f).read_text(errors="ignore")]
    assert offenders == []


@pytest.mark.e2e
def test_fresh_clone_with_nothing_beside_it_validates_every_offline_recipe(tmp_path):
    """git clone into an empty folder; recipes validate from the clone and from elsewhere."""
    clone = tmp_path / "empty" / "qrecipe"
    clone.parent.mkdir()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    assert not (clone.parent / "shared").exists()
    _dry_run_all(sys.executable, clone, _clean_env())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _dry_run_all(sys.executable, elsewhere, _clean_env(PYTHONPATH=str(clone)))


def _see_this_environment(py: str) -> None:
    """--system-site-packages exposes the *base* interpreter's packages. When the tests run
    inside a virtualenv (as the README suggests), torch & co. live in that virtualenv instead:
    list its site-packages in the new venv as plain path entries (a .pth line adds a folder but
    runs none of the .pth files inside it, so an editable qrecipe there stays invisible)."""
    import sysconfig
    ours = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "_qrecipe_test_parent_env.pth").write_text("\n".join(ours) + "\n")


@pytest.mark.e2e
def test_installed_wheel_in_a_fresh_venv_validates_from_any_folder(tmp_path):
    """The wheel carries the texts; a venv (system packages visible for torch & co., qrecipe
    itself only from the wheel) validates every offline recipe from an unrelated folder."""
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("qrecipe-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    py = str(venv / "bin" / "python")
    _see_this_environment(py)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    env = _clean_env(PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '')}")
    where = subprocess.run([py, "-c", "import qrecipe, qrecipe.paths as p; "
                            "print(qrecipe.__file__); print(p.resolve_path("
                            "'pkg://qrecipe/texts/wikitext2_raw_test.txt'))"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    module_file, text_file = where.stdout.split()
    assert module_file.startswith(str(venv)) and text_file.startswith(str(venv))
    assert Path(text_file).stat().st_size == (DATA / "wikitext2_raw_test.txt").stat().st_size
    _dry_run_all(py, work, env)
    shutil.rmtree(venv)
