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
import importlib
import sys
from typing import Dict, List, Optional, Tuple

from qrecipe.boundary.yamlfile import printable
from qrecipe.errors import QRecipeError

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
    "version": ("qrecipe.commands.version", "qrecipe's version and the packages it runs on"),
}
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
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return int(module.main(argv[1:]) or 0)
    except QRecipeError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)  # it may quote a file's words
        return 2
