"""Where recipes come from, and which file a recipe name means.

Three kinds of source, searched together (none shadows another):
- the project's `recipes/` (inside the package, `qrecipe/recipes/`, when installed as a wheel);
- every folder in QRECIPE_RECIPE_PATH (colon-separated, like PATH), each holding NAME.yaml files;
- installed recipe packs (qrecipe/recipes/packs.py): a distribution that declares an entry point
  in the group `qrecipe.recipes`, `PACK = "python.package"`, whose package folder holds the
  NAME.yaml files, found without importing the package (nothing a pack ships runs here).

`NAME` means the one recipe of that name in any source; a name defined in two places is an error
naming both files. `PACK/NAME` (or `project/NAME`) picks one source explicitly. A pack name two
distributions declare is an error naming both, wherever one of its recipes is asked for.
Nothing here imports torch or Hydra.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from qrecipe.errors import QRecipeError
from qrecipe.paths import recipes_dir
from qrecipe.recipes import packs
from qrecipe.recipes.packs import PROJECT

ENV_PATH = "QRECIPE_RECIPE_PATH"


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


def sources() -> List[Source]:
    found = [Source("project", recipes_dir(), PROJECT)]
    for folder in os.environ.get(ENV_PATH, "").split(os.pathsep):
        if folder.strip():
            path = Path(folder).expanduser().resolve()
            if not path.is_dir():
                raise QRecipeError("not a folder", key=ENV_PATH, value=folder,
                                   hint="each entry is a folder holding NAME.yaml recipes")
            found.append(Source("folder", path))
    found += [Source("pack", p.folder, p.name) for p in packs.installed()]
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
    two places is an error naming both files; a recipe of a pack two distributions declare is
    an error naming both distributions."""
    if "/" in name:
        pack, _, bare = name.partition("/")
        hits = [r for r in all_recipes() if r.pack == pack and r.name == bare]
        _refuse_clashing_packs([pack])
        return hits[0] if hits else None
    hits = by_name().get(name, [])
    _refuse_clashing_packs([r.pack for r in hits if r.kind == "pack"])
    if len(hits) > 1:
        raise QRecipeError(
            f"recipe {name!r} is defined in {len(hits)} places: "
            + " and ".join(f"{r.path} ({r.source})" for r in hits), key="recipe", value=name,
            hint="rename one, drop a folder from " + ENV_PATH + ", or pick one with "
            "+recipe=PACK/NAME (" + ", ".join(f"{r.pack}/{name}" for r in hits if r.pack) + ")")
    return hits[0] if hits else None


def _refuse_clashing_packs(names: List[Optional[str]]) -> None:
    if not names:
        return
    clashing = packs.clashes(packs.installed())
    for n in names:
        if n in clashing:
            raise packs.clash_error(n, clashing[n])


def require(name: str) -> Recipe:
    """find(name), or the one-line error for a name no source has."""
    recipe = find(name)
    if recipe is None:
        raise QRecipeError("no such recipe", key="recipe", value=name,
                           hint="`qrecipe recipes` lists them")
    return recipe


def names() -> List[str]:
    """Every name `+recipe=` accepts: bare names and PACK/NAME."""
    recipes = all_recipes()
    return sorted({r.name for r in recipes} | {r.qualified for r in recipes if r.pack})
