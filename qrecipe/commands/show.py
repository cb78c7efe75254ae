"""`qrecipe show NAME [overrides...]`: where the recipe comes from, its metadata, and the
composed, resolved config a run would use (overrides applied as on the command line). No torch."""
from __future__ import annotations

import argparse
from typing import List

from omegaconf import OmegaConf

from qrecipe.errors import QRecipeError
from qrecipe.recipes.compose import compose, recipe_overrides
from qrecipe.recipes.sources import find


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="qrecipe show", description=__doc__.split("\n")[0])
    ap.add_argument("name", help="NAME or PACK/NAME (see `qrecipe recipes`)")
    ap.add_argument("overrides", nargs="*", help="key=value or group=option, as for a run")
    a = ap.parse_args(argv)
    recipe = find(a.name)
    if recipe is None:
        raise QRecipeError("no such recipe", key="recipe", value=a.name,
                           hint="`qrecipe recipes` lists them")
    cfg = compose(recipe_overrides(a.name, a.overrides))
    meta = OmegaConf.to_container(cfg.meta, resolve=True)
    print(f"# recipe {recipe.qualified}: {recipe.path} ({recipe.source})")
    print("# meta:")
    for line in OmegaConf.to_yaml(meta).splitlines():
        print(f"#   {line}")
    print(OmegaConf.to_yaml(cfg, resolve=True), end="")
    return 0
