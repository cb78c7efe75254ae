"""Shell completion. Hydra's own (`eval "$(qrecipe --shell-completion install=bash)"`) completes
overrides and `+recipe=` names by asking the program itself: `qrecipe -sc query=bash` with the
line being typed in COMP_LINE. qrecipe answers that query first (cli.py): the first word also
completes to the command names, and after a command word to what the command takes (recipe
names for show and validate, shipped model names for plan, files otherwise: bash's default).
No torch, no composition: names come from the recipe sources and conf/model/ only.
"""
from __future__ import annotations

from typing import List, Tuple

from qrecipe.commands import COMMANDS, HELP
from qrecipe.paths import config_dir
from qrecipe.recipes.sources import all_recipes

FLAGS = ("-sc", "--shell-completion")


def is_query(argv: List[str]) -> bool:
    """`-sc query=SHELL` (or --shell-completion query=SHELL, in any order)."""
    return any(a in FLAGS for a in argv) and any(a.startswith("query=") for a in argv)


def answer(line: str) -> Tuple[List[str], bool]:
    """(words to offer, whether Hydra's own answer follows) for the line being typed."""
    args = line.split()[1:]
    current = "" if not args or line.endswith((" ", "\t")) else args.pop()
    if not args:  # the first word: a command, or Hydra's overrides (+recipe=: Hydra offers
        # recipe=, which is not how a recipe is chosen)
        return sorted(w for w in (*COMMANDS, HELP, "+recipe=") if w.startswith(current)), True
    if args[0] not in COMMANDS and args[0] != HELP:
        return [], True
    if len(args) > 1:  # a command's later words: files or overrides, bash's default
        return [], False
    return sorted(w for w in _first_argument(args[0]) if w.startswith(current)), False


def _first_argument(command: str) -> List[str]:
    if command in ("show", "validate"):
        return sorted({r.qualified for r in all_recipes()} | {r.name for r in all_recipes()})
    if command == "plan":
        return [*(p.stem for p in (config_dir() / "model").glob("*.yaml") if p.stem != "local"),
                "--sweep"]
    if command == "kernels":
        return ["list", "build"]
    if command == HELP:
        return list(COMMANDS)
    return []
