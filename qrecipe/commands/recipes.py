"""`qrecipe recipes`: every recipe of every source (project, QRECIPE_RECIPE_PATH folders,
installed packs), with its source and one-line description. A name defined in two places is
marked (running it by bare name is an error); so is a pack name two distributions declare, and a
pack whose distribution ships Python code (installing it trusted that code); a recipe the safe
loader refuses is listed with why. Everything a recipe or a file name says is printed with
control characters escaped (qrecipe/boundary/yamlfile.py). `--capabilities` prints what each
backend supports instead (backends/capabilities.py). No torch, no Hydra composition: each file
is only parsed and checked, and no pack is imported."""
from __future__ import annotations

import argparse
from typing import Dict, List

from qrecipe.backends.capabilities import markdown_table
from qrecipe.boundary.yamlfile import printable
from qrecipe.commands import description
from qrecipe.errors import QRecipeError
from qrecipe.recipes import packs
from qrecipe.recipes.safety import load_recipe
from qrecipe.recipes.sources import Recipe, all_recipes


def describe(recipe: Recipe) -> str:
    """meta.description, else the first comment line under the header."""
    try:
        cfg, text = load_recipe(recipe.path)[0], recipe.path.read_text(encoding="utf-8")
    except QRecipeError as e:
        return f"REFUSED: {e}"
    desc = cfg.get("meta", {}).get("description") if "meta" in cfg else None
    if desc:
        return str(desc)
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#") and "@package" not in s:
            return s.lstrip("# ")
    return ""


def pack_notes() -> Dict[str, str]:
    """Pack name -> what `qrecipe recipes` says of it beside its name (clash, code)."""
    installed = packs.installed()
    clashing = packs.clashes(installed)
    notes: Dict[str, str] = {}
    for p in installed:
        if p.name in clashing:
            notes[p.name] = ("CLASH: declared by " + " and ".join(q.dist for q in
                                                                 clashing[p.name]))
        elif p.code_files():
            notes[p.name] = "ships Python code: installing it trusted it"
    return notes


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="qrecipe recipes", description=description(__doc__))
    ap.add_argument("--paths", action="store_true", help="also print each recipe's file")
    ap.add_argument("--capabilities", action="store_true",
                    help="print the methods, bits, group sizes and devices of each backend")
    a = ap.parse_args(argv)
    if a.capabilities:
        print("\n".join(markdown_table()))
        return 0
    recipes, notes = all_recipes(), pack_notes()
    count: dict = {}
    for r in recipes:
        count[r.name] = count.get(r.name, 0) + 1
    rows = []
    for r in recipes:
        name = r.name if count[r.name] == 1 else f"{r.qualified} (CLASH: {count[r.name]} places)"
        source = r.source + (f" ({notes[r.pack]})" if r.kind == "pack" and r.pack in notes
                             else "")
        # one row each: a newline in a description or file name must not print a fake row
        rows.append(tuple(printable(x).replace("\n", "\\n")
                          for x in (name, source, describe(r), str(r.path))))
    w0 = max([len(x[0]) for x in rows] + [4])
    w1 = max([len(x[1]) for x in rows] + [6])
    print(f"{'NAME':<{w0}}  {'SOURCE':<{w1}}  DESCRIPTION")
    for name, src, desc, path in rows:
        print(f"{name:<{w0}}  {src:<{w1}}  {desc}" + (f"  [{path}]" if a.paths else ""))
    return 0
