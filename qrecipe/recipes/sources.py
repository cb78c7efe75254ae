"""Where recipes come from, and which file a recipe name means.

Three kinds of source, searched together (none shadows another):
- the project's `recipes/` (inside the package, `qrecipe/recipes/`, when installed as a wheel);
- every folder in QRECIPE_RECIPE_PATH (colon-separated, like PATH), each holding NAME.yaml files;
- installed recipe packs: a distribution that declares an entry point in the group
  `qrecipe.recipes`, `PACK = "python.package"`, whose package folder holds the NAME.yaml files.
  The folder is found without importing the package (nothing a pack ships runs here).

`NAME` means the one recipe of that name in any source; a name defined in two places is an error
naming both files. `PACK/NAME` (or `project/NAME`) picks one source explicitly.
Nothing here imports torch or Hydra.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Dict, List, Optional

from qrecipe.errors import QRecipeError
from qrecipe.paths import recipes_dir

ENV_PATH = "QRECIPE_RECIPE_PATH"
ENTRY_POINT_GROUP = "qrecipe.recipes"
PROJECT = "project"


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    kind: str  # project | folder | pack
    pack: Optional[str] = None  # the pack's name (entry point), or "project"

    @property
    def source(self) -> str:
        if self.kind == "folder":
            return f"folder {self.path.parent}"
        if self.kind == "pack":
            return f"pack {self.pack}"
        return PROJECT

    @property
    def qualified(self) -> str:
        return f"{self.pack}/{self.name}" if self.pack else self.name


@dataclass(frozen=True)
class Source:
    kind: str
    folder: Path
    pack: Optional[str] = None


def _pack_folder(ep) -> Optional[Path]:
    """The folder of the package an entry point names, located without importing it."""
    module = ep.value.split(":")[0].strip()
    dist = getattr(ep, "dist", None)
    if dist is not None:
        where = Path(dist.locate_file(module.replace(".", "/")))
        if where.is_dir():
            return where
    if "." not in module:  # an editable install: ask the import system (no import of it)
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0])
    return None


def sources() -> List[Source]:
    found = [Source("project", recipes_dir(), PROJECT)]
    for folder in os.environ.get(ENV_PATH, "").split(os.pathsep):
        if folder.strip():
            path = Path(folder).expanduser().resolve()
            if not path.is_dir():
                raise QRecipeError("not a folder", key=ENV_PATH, value=folder,
                                   hint="each entry is a folder holding NAME.yaml recipes")
            found.append(Source("folder", path))
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name == PROJECT or "/" in ep.name:
            raise QRecipeError("reserved or invalid pack name", key=f"{ENTRY_POINT_GROUP} "
                               "entry point", value=ep.name)
        folder = _pack_folder(ep)
        if folder is None:
            raise QRecipeError("recipe pack folder not found", key=f"pack {ep.name}",
                               value=ep.value, hint="the entry point names a package folder")
        found.append(Source("pack", folder, ep.name))
    return found


def all_recipes() -> List[Recipe]:
    """Every recipe of every source (clashing names included, each with its own file)."""
    seen = set()
    out: List[Recipe] = []
    for s in sources():
        if s.folder in seen or not s.folder.is_dir():
            continue
        seen.add(s.folder)
        for f in sorted(s.folder.glob("*.yaml")):
            out.append(Recipe(f.stem, f.resolve(), s.kind,
                              s.pack if s.kind != "folder" else None))
    return out


def by_name() -> Dict[str, List[Recipe]]:
    names: Dict[str, List[Recipe]] = {}
    for r in all_recipes():
        names.setdefault(r.name, []).append(r)
    return names


def find(name: str) -> Optional[Recipe]:
    """The recipe `name` (or `PACK/name`) means; None when there is none. A bare name found in
    two places is an error naming both files."""
    if "/" in name:
        pack, _, bare = name.partition("/")
        hits = [r for r in all_recipes() if r.pack == pack and r.name == bare]
        return hits[0] if hits else None
    hits = by_name().get(name, [])
    if len(hits) > 1:
        raise QRecipeError(
            f"recipe {name!r} is defined in {len(hits)} places: "
            + " and ".join(f"{r.path} ({r.source})" for r in hits), key="recipe", value=name,
            hint="rename one, drop a folder from " + ENV_PATH + ", or pick one with "
            "+recipe=PACK/NAME (" + ", ".join(f"{r.pack}/{name}" for r in hits if r.pack) + ")")
    return hits[0] if hits else None


def names() -> List[str]:
    """Every name `+recipe=` accepts: bare names and PACK/NAME."""
    recipes = all_recipes()
    return sorted({r.name for r in recipes} | {r.qualified for r in recipes if r.pack})
