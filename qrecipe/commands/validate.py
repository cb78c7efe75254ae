"""`qrecipe validate NAME_OR_FILE [overrides...]`: every check that needs no weights — the safe
loader, the schema, capabilities of the method and backend, group size against the model's
layer widths (read from the model's metadata when it is local), files and packages — then
warnings when the installed versions differ from the ones the recipe was tested with.
Exit 0 valid, 2 not. No torch."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import List

from qrecipe.errors import QRecipeError
from qrecipe.recipes.compose import compose, folder_on_recipe_path, recipe_overrides
from qrecipe.recipes.meta import version_warnings
from qrecipe.recipes.safety import load_recipe
from qrecipe.recipes.sources import find


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="qrecipe validate", description=__doc__.split("\n")[0])
    ap.add_argument("recipe", help="NAME, PACK/NAME, or a path to a recipe .yaml file")
    ap.add_argument("overrides", nargs="*", help="key=value or group=option, as for a run")
    a = ap.parse_args(argv)
    path = Path(a.recipe)
    is_file = a.recipe.endswith((".yaml", ".yml")) or path.is_file()
    if is_file:
        if not path.is_file():
            raise QRecipeError("no such file", key="recipe", value=a.recipe)
        load_recipe(path)  # the safety rules first, with the file's own name in the message
        name, ctx = path.stem, folder_on_recipe_path(path.resolve().parent)
    else:
        recipe = find(a.recipe)
        if recipe is None:
            raise QRecipeError("no such recipe", key="recipe", value=a.recipe,
                               hint="`qrecipe recipes` lists them")
        name, ctx = a.recipe, contextlib.nullcontext()
    with ctx:
        cfg = compose(recipe_overrides(name, a.overrides))
    from qrecipe.run.validate import resolve_paths, validate
    resolve_paths(cfg)
    plan = validate(cfg)
    for w in version_warnings(cfg.meta):
        print(f"warning: {w}", file=sys.stderr)
    print(f"valid: {cfg.recipe_name}: {cfg.method.name} via {plan.backend.name}, "
          f"w{cfg.bits.width} g{cfg.bits.group_size}, model {cfg.model.path} "
          f"({plan.model.architecture}, {plan.model.num_layers} layers)")
    return 0
