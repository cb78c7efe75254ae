"""`qrecipe validate NAME_OR_FILE [overrides...]`: every check that needs no weights and no
particular machine (the safe loader, the schema, capabilities of the method and backend, group
size against the model's layer widths, files and packages, and the hub inputs when the hub is
off), then warnings when the installed versions differ from the ones the recipe was tested with.
A GPU recipe validates on a machine without a GPU: the job's hardware is checked when it runs,
and a line says so. Exit 0 valid, 2 not. No torch."""
from __future__ import annotations

import sys
from typing import List

from qrecipe.commands import recipe_parser, recipe_source
from qrecipe.recipes.compose import compose, recipe_overrides
from qrecipe.recipes.meta import version_warnings
from qrecipe.run.validate import resolve_paths, validate


def main(argv: List[str]) -> int:
    a = recipe_parser("qrecipe validate", __doc__,
                      "NAME, PACK/NAME, or a path to a recipe .yaml file").parse_args(argv)
    name, ctx = recipe_source(a.recipe)
    with ctx:
        cfg = compose(recipe_overrides(name, a.overrides))
    resolve_paths(cfg)
    plan = validate(cfg, here=False)  # the config, not this machine
    for w in version_warnings(cfg.meta):
        print(f"warning: {w}", file=sys.stderr)
    print(f"valid: {cfg.recipe_name}: {cfg.method.name} via {plan.backend.name}, "
          f"w{cfg.bits.width} g{cfg.bits.group_size}, model {cfg.model.path} "
          f"({plan.model.architecture}, {plan.model.num_layers} layers)")
    print(f"note: {plan.unchecked}")
    return 0
