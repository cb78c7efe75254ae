"""`qrecipe COMMAND [args]`: the commands that sit beside the Hydra entry point.

`python -m qrecipe +recipe=NAME ...` (no command word) is a run or a sweep, composed by Hydra.
A first argument that names a command below runs that command instead. Each command lives in its
own module as `main(argv: list[str]) -> int` (argparse inside, exit code returned); the module
is imported only when its command is called, and none of them imports torch unless its work
needs weights. To add one: write the module, add a row here, and a line to the help header in
conf/hydra/help/qrecipe.yaml.
"""
from __future__ import annotations

import importlib
import sys
from typing import Dict, List, Tuple

# name -> (module, one-line description)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "recipes": ("qrecipe.commands.recipes", "list every recipe with its source and description"),
    "show": ("qrecipe.commands.show", "print a recipe's source, metadata and composed config"),
    "validate": ("qrecipe.commands.validate", "check a recipe (name or file) without loading weights"),
    "verify": ("qrecipe.commands.verify", "check a run directory against its manifest.json"),
    "reproduce": ("qrecipe.commands.reproduce", "re-run a finished run from its lock and compare"),
    "resume": ("qrecipe.commands.resume", "finish an interrupted run in its directory"),
    "plan": ("qrecipe.plan.build", "will MODEL fit this hardware; formats, time, recipe"),
}


def is_command(argv: List[str]) -> bool:
    return bool(argv) and argv[0] in COMMANDS


def run_command(argv: List[str]) -> int:
    """argv[0] is the command's name. User errors inside a command end in one line, exit 2."""
    from qrecipe.errors import QRecipeError

    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return int(module.main(argv[1:]) or 0)
    except QRecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
