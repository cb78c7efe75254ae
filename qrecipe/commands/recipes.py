"""`qrecipe recipes`: every recipe of every source (project, QRECIPE_RECIPE_PATH folders,
installed packs), with its source and one-line description. A name defined in two places is
marked (running it by bare name is an error); a recipe the safe loader refuses is listed with
why. No torch, no Hydra composition: each file is only parsed and checked."""
from __future__ import annotations

import argparse
from typing import List

from qrecipe.errors import QRecipeError
from qrecipe.recipes.safety import load_recipe
from qrecipe.recipes.sources import Recipe, all_recipes


def describe(recipe: Recipe) -> str:
    """meta.description, else the first comment line under the header."""
    try:
        cfg, _ = load_recipe(recipe.path)
    except QRecipeError as e:
        return f"REFUSED: {e}"
    desc = cfg.get("meta", {}).get("description") if "meta" in cfg else None
    if desc:
        return str(desc)
    for line in recipe.path.read_text().splitlines():
        s = line.strip()
        if s.startswith("#") and "@package" not in s:
            return s.lstrip("# ")
    return ""


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="qrecipe recipes", description=__doc__.split("\n")[0])
    ap.add_argument("--paths", action="store_true", help="also print each recipe's file")
    a = ap.parse_args(argv)
    recipes = all_recipes()
    count: dict = {}
    for r in recipes:
        count[r.name] = count.get(r.name, 0) + 1
    rows = []
    for r in recipes:
        name = r.name if count[r.name] == 1 else f"{r.qualified} (CLASH: {count[r.name]} places)"
        rows.append((name, r.source, describe(r), str(r.path)))
    w0 = max([len(x[0]) for x in rows] + [4])
    w1 = max([len(x[1]) for x in rows] + [6])
    print(f"{'NAME':<{w0}}  {'SOURCE':<{w1}}  DESCRIPTION")
    for name, src, desc, path in rows:
        print(f"{name:<{w0}}  {src:<{w1}}  {desc}" + (f"  [{path}]" if a.paths else ""))
    return 0
