"""A real recipe pack for the tests: a wheel written by hand (no build backend needed, offline),
holding a package with recipe YAML files and a `qrecipe.recipes` entry point, then installed by
pip into a --target folder that PYTHONPATH puts on sys.path (importlib.metadata sees its
dist-info there). `build_wheel` takes another distribution, package or pack name and extra
files (the trust-boundary tests build a pack that ships code, and two packs of one name)."""
from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Optional

import pytest
from conftest import ROOT

PACK = "teampack"  # entry point name: +recipe=teampack/NAME
PACKAGE = "qrecipe_teampack"
DIST = "qrecipe_teampack"
VERSION = "0.1.0"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(out_dir: Path, recipes: Dict[str, str], *, dist: str = DIST,
                package: str = PACKAGE, pack: str = PACK,
                init: bytes = b'"""Recipes for qrecipe (data only)."""\n',
                extra: Optional[Dict[str, bytes]] = None) -> Path:
    """A wheel of `dist` whose `package` holds the recipes and whose entry point declares
    `pack`; `extra`: more files by their path in the wheel (code, other packages)."""
    info = f"{dist}-{VERSION}.dist-info"
    files = {f"{package}/__init__.py": init, **(extra or {})}
    for name, text in recipes.items():
        files[f"{package}/{name}.yaml"] = text.encode()
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {dist}\nVersion: {VERSION}\n"
                                 "Summary: a qrecipe recipe pack for tests\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: qrecipe-tests\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{info}/entry_points.txt"] = f"[qrecipe.recipes]\n{pack} = {package}\n".encode()
    record = [_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = Path(out_dir) / f"{dist}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    return wheel


def install(wheel: Path, target: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(target), str(wheel)], check=True, capture_output=True)
    return target


BASE = (ROOT / "recipes" / "smollm2_rtn_w4.yaml").read_text()


def team_recipe(name: str, description: str) -> str:
    """The shipped RTN recipe under another name and description (its meta kept)."""
    text = BASE.replace("recipe_name: smollm2_rtn_w4", f"recipe_name: {name}")
    return text.replace(text[text.index("  description:"):].splitlines()[0],
                        f'  description: "{description}"')


@pytest.fixture(scope="session")
def pack_site(tmp_path_factory):
    """The test pack, built as a wheel and pip-installed into a --target folder."""
    d = tmp_path_factory.mktemp("pack")
    wheel = build_wheel(d, {"pack_rtn": team_recipe("pack_rtn", "RTN from the team pack"),
                            "smollm2_int8": team_recipe("smollm2_int8", "clashes with project")})
    return install(wheel, d / "site")
