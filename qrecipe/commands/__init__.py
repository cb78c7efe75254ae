"""`qrecipe COMMAND [args]`: the commands that sit beside the Hydra entry point.

`python -m qrecipe +recipe=NAME ...` (no command word) is a run or a sweep, composed by Hydra.
A first argument that names a command below runs that command instead. Each command lives in its
own module as `main(argv: list[str]) -> int` (argparse inside, exit code returned); the module
is imported only when its command is called, and none of them imports torch unless its work
needs weights. To add one: write the module, add a row here, and a line to the help header in
conf/hydra/help/qrecipe.yaml. `qrecipe help [COMMAND]` and `qrecipe --version` are spellings of
`--help`, `COMMAND --help` and `version` (help_argv).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from pathlib import Path
from typing import ContextManager, Dict, List, Optional, Tuple

from qrecipe.boundary.pathargs import check_path_arg
from qrecipe.boundary.yamlfile import printable
from qrecipe.errors import QRecipeError
from qrecipe.recipes.compose import folder_on_recipe_path
from qrecipe.recipes.safety import PLAIN_NAME, load_recipe
from qrecipe.recipes.sources import require

# name -> (module, one-line description)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "recipes": ("qrecipe.commands.recipes", "list every recipe with its source and description"),
    "show": ("qrecipe.commands.show", "print a recipe's source, metadata and composed config"),
    "validate": ("qrecipe.commands.validate",
                 "check a recipe (name or file) without loading weights"),
    "verify": ("qrecipe.commands.verify", "check a run directory against its manifest.json"),
    "reproduce": ("qrecipe.commands.reproduce", "re-run a finished run from its lock and compare"),
    "resume": ("qrecipe.commands.resume", "finish an interrupted run in its directory"),
    "plan": ("qrecipe.commands.plan", "will MODEL fit this hardware; formats, time, recipe"),
    "kernels": ("qrecipe.commands.kernels",
                "list the inference kernels and their builds; `kernels build`: prebuild them"),
    "version": ("qrecipe.commands.version", "qrecipe's version and the packages it runs on"),
}
# (command, its first argument) -> the module of that variant, where the variant needs layers
# the command itself never loads (`plan --sweep` validates every job: the run layer).
VARIANTS: Dict[Tuple[str, str], str] = {("plan", "--sweep"): "qrecipe.commands.plan_sweep"}
HELP = "help"


def description(doc: str) -> str:
    """A command's --help description: the first paragraph of its module docstring, whole
    (its lines joined; argparse rewraps it)."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def recipe_parser(prog: str, doc: str, recipe_help: str) -> argparse.ArgumentParser:
    """The command line of a command that takes a recipe and overrides as a run does (show,
    validate): `recipe` and `overrides`; the description is the first paragraph of `doc`."""
    ap = argparse.ArgumentParser(prog=prog, description=description(doc))
    ap.add_argument("recipe", help=recipe_help)
    ap.add_argument("overrides", nargs="*", help="key=value or group=option, as for a run")
    return ap


def recipe_source(arg: str) -> Tuple[str, ContextManager[None]]:
    """A recipe as a command names it (NAME, PACK/NAME, or a .yaml file's path) -> the name
    `+recipe=` takes and the context to compose in (a file's folder on the recipe path). A file
    passes the safety rules first, with its own name in the message."""
    path = Path(check_path_arg(arg, "recipe"))
    if not (arg.endswith((".yaml", ".yml")) or path.is_file()):
        require(arg)
        return arg, contextlib.nullcontext()
    if not path.is_file():
        raise QRecipeError("no such file", key="recipe", value=arg)
    load_recipe(path)
    if not PLAIN_NAME.fullmatch(path.stem):  # it becomes the override +recipe=STEM
        raise QRecipeError("a recipe file's name is one plain name (letters, digits, _ . -) "
                           "plus .yaml", key="recipe", value=arg)
    return path.stem, folder_on_recipe_path(path.resolve().parent)


def help_argv(argv: List[str]) -> Optional[List[str]]:
    """What a newcomer's spelling stands for: `help` -> --help (Hydra's, which lists the
    commands), `help COMMAND` -> COMMAND --help, `--version` (Hydra would print its own) ->
    version. None: as is."""
    if argv[:1] == [HELP]:
        return [argv[1], "--help"] if len(argv) > 1 and argv[1] in COMMANDS else ["--help"]
    if "--version" in argv and not is_command(argv):
        return ["version"]
    return None


def is_command(argv: List[str]) -> bool:
    return bool(argv) and argv[0] in COMMANDS


def run_command(argv: List[str]) -> int:
    """argv[0] is the command's name. User errors inside a command end in one line, exit 2."""
    variant = VARIANTS.get(tuple(argv[:2]))
    module = importlib.import_module(variant or COMMANDS[argv[0]][0])
    try:
        return int(module.main(argv[2 if variant else 1:]) or 0)
    except QRecipeError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)  # it may quote a file's words
        return 2
