"""Installed recipe packs: distributions that declare an entry point in the group
`qrecipe.recipes` (`PACK = "python.package"`), whose package folder holds NAME.yaml recipes.

A pack is read as data: its folder is found from the distribution's file list
(`locate_file`), or for an editable install through `importlib.util.find_spec` of a top-level
name (which locates without importing); nothing here imports a pack's modules. But installing a
Python package is trusting it: other tools' plugin discovery (Hydra's `hydra_plugins`, entry
points, `.pth` files) may run its code in any Python process. So each pack says which of its
files are code (`Pack.code_files`: modules beyond a docstring-only `__init__.py`, `.pth` files,
extension modules), and `qrecipe recipes` shows it. Two distributions declaring one pack name
are a clash (`clashes`), an error wherever that pack is used. No torch, no Hydra."""
from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
from dataclasses import dataclass, field
from importlib.metadata import Distribution, EntryPoint, entry_points
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from qrecipe.errors import QRecipeError

ENTRY_POINT_GROUP = "qrecipe.recipes"
PROJECT = "project"
# Files that run code once installed: importable modules and the site .pth hook.
CODE_SUFFIXES = tuple(importlib.machinery.all_suffixes()) + (".pth",)
MAX_INIT_BYTES = 64 * 1024  # an __init__.py read to see it is only a docstring
MAX_FILES = 10_000  # files of a pack folder looked at for code


@dataclass(frozen=True)
class Pack:
    name: str
    folder: Path
    dist: str  # "NAME VERSION (LOCATION)" of the distribution that declares it
    distribution: Optional[Distribution] = field(default=None, compare=False, repr=False)

    def code_files(self) -> Tuple[str, ...]:
        """Its files that are Python code (empty: data only); read only when asked for."""
        return _code_files(self.distribution, self.folder)


def installed() -> List[Pack]:
    """Every pack installed on sys.path, by name (a clash keeps both)."""
    out = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name == PROJECT or "/" in ep.name:
            raise QRecipeError("reserved or invalid pack name", key=f"{ENTRY_POINT_GROUP} "
                               "entry point", value=ep.name)
        folder = _pack_folder(ep)
        if folder is None:
            raise QRecipeError("recipe pack folder not found", key=f"pack {ep.name}",
                               value=ep.value, hint="the entry point names a package folder")
        dist = getattr(ep, "dist", None)
        out.append(Pack(ep.name, folder, _dist_label(dist), dist))
    return out


def clashes(packs: Iterable[Pack]) -> Dict[str, List[Pack]]:
    """Pack name -> the packs of different distributions that declare it (two or more)."""
    by_name: Dict[str, List[Pack]] = {}
    for p in packs:
        by_name.setdefault(p.name, []).append(p)
    return {n: ps for n, ps in by_name.items() if len({p.dist for p in ps}) > 1}


def clash_error(name: str, packs: List[Pack]) -> QRecipeError:
    return QRecipeError(f"pack name {name!r} is declared by {len(packs)} installed "
                        "distributions: " + " and ".join(p.dist for p in packs),
                        hint="uninstall all but one (pip uninstall NAME); qrecipe never picks "
                             "one by sys.path order")


def _pack_folder(ep: EntryPoint) -> Optional[Path]:
    """The folder of the package an entry point names, located without importing it."""
    module = ep.value.split(":")[0].strip()
    dist = getattr(ep, "dist", None)
    if dist is not None:
        where = Path(dist.locate_file(module.replace(".", "/")))
        if where.is_dir():
            return where
    # An editable install: ask the import system. find_spec of a top-level name locates it
    # without importing; a dotted name would import its parent package, so none is asked.
    if "." not in module:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0])
    return None


def _dist_label(dist: Optional[Distribution]) -> str:
    if dist is None:
        return "an unknown distribution"
    return f"{dist.metadata['Name']} {dist.version} ({dist.locate_file('')})"


def _code_files(dist: Optional[Distribution], folder: Path) -> Tuple[str, ...]:
    """The distribution's listed files and the pack folder's own files that are code."""
    files = [Path(dist.locate_file(f)) for f in dist.files or []] if dist is not None else []
    files += [p for _, p in zip(range(MAX_FILES), folder.rglob("*"))]
    code = {str(p.resolve()) for p in files if _is_code(p)}
    if dist is not None and dist.files is None:
        code.add(f"{folder} (its distribution lists no files: unknown)")
    return tuple(sorted(code))


def _is_code(path: Path) -> bool:
    if not path.name.endswith(CODE_SUFFIXES) or path.is_dir():
        return False
    if path.parent.name == "__pycache__" and path.name.endswith(".pyc"):
        return False  # compiled from a .py beside it, which is judged itself
    return not (path.name == "__init__.py" and _docstring_only(path))


def _docstring_only(path: Path) -> bool:
    try:
        if path.stat().st_size > MAX_INIT_BYTES:
            return False
        body = ast.parse(path.read_text(encoding="utf-8")).body
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
               and isinstance(n.value.value, str) for n in body)
