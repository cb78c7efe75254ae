"""`qrecipe show NAME [overrides...]`: where the recipe comes from, its metadata, and the
composed, resolved config a run would use (overrides applied as on the command line). Printed
with control characters escaped (a recipe's words reach the terminal). No torch."""
from __future__ import annotations

from typing import List

from omegaconf import OmegaConf

from qrecipe.boundary.pathargs import check_path_arg
from qrecipe.boundary.yamlfile import printable
from qrecipe.commands import recipe_parser
from qrecipe.recipes.compose import compose, recipe_overrides
from qrecipe.recipes.sources import require


def main(argv: List[str]) -> int:
    a = recipe_parser("qrecipe show", __doc__,
                      "NAME or PACK/NAME (see `qrecipe recipes`)").parse_args(argv)
    recipe = require(check_path_arg(a.recipe, "recipe"))
    cfg = compose(recipe_overrides(a.recipe, a.overrides))
    meta = OmegaConf.to_container(cfg.meta, resolve=True)
    lines = [f"# recipe {recipe.qualified}: {recipe.path} ({recipe.source})", "# meta:"]
    lines += [f"#   {line}" for line in OmegaConf.to_yaml(meta).splitlines()]
    print(printable("\n".join(lines)))
    print(printable(OmegaConf.to_yaml(cfg, resolve=True)), end="")
    return 0
