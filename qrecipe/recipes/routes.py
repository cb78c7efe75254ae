"""Which config folders the command line may hand to Hydra (`python -m qrecipe ...`), checked
before Hydra runs: a folder Hydra searches makes every YAML file in it composable, past the safe
loader (qrecipe/recipes/safety.py), and a `hydra:` block there runs callbacks.

- `--config-dir DIR` (`-cd DIR`, `--config-dir=DIR`, any abbreviation argparse accepts) is a run
  directory being re-run: DIR holds recipe.lock.yaml and `--config-name recipe.lock` is given.
  DIR holds no symbolic link (qrecipe/boundary/rundir.py); the lock is checked
  (qrecipe/recipes/lock.py) and Hydra gets a private copy of it alone (`Route.private_dir`),
  never DIR. Anything else: one line pointing to QRECIPE_RECIPE_PATH.
- `--config-path`/`-cp` (replaces qrecipe's own conf/) and `hydra.searchpath=...` in any spelling
  are refused; `--experimental-rerun` too (it unpickles a file: runs code).
The argv is read with Hydra's own parser, so every spelling Hydra understands is seen here.
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from qrecipe.boundary.pathargs import check_path_arg
from qrecipe.boundary.rundir import check_no_symlinks
from qrecipe.errors import QRecipeError
from qrecipe.recipes.frozen import LOCK
from qrecipe.recipes.lock import private_copy
from qrecipe.recipes.sources import ENV_PATH

LOCK_NAMES = (Path(LOCK).stem, LOCK)  # --config-name recipe.lock (or recipe.lock.yaml)
HINT = f"put recipe folders on {ENV_PATH} (`qrecipe recipes` lists what it finds)"


@dataclass
class Route:
    argv: List[str]  # what Hydra's parser reads (sys.argv[1:])
    private_dir: Optional[Path] = None  # the lock's private copy, removed by cleanup()

    def cleanup(self) -> None:
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)


def hydra_argv(argv: List[str]) -> Route:
    """The argv Hydra gets for `argv` (unchanged unless --config-dir names a run directory),
    or a one-line QRecipeError for a route that would let unchecked files in."""
    args = get_args_parser().parse_args(argv)  # argparse errors exit 2, as Hydra's would
    if args.config_path is not None:
        raise QRecipeError(f"--config-path is not accepted (it replaces qrecipe's own config "
                           f"folder): {args.config_path!r}; {HINT}")
    if args.experimental_rerun is not None:
        raise QRecipeError(f"--experimental-rerun is not accepted (it unpickles a file, which "
                           f"runs code): {args.experimental_rerun!r}; re-run a run directory "
                           "with `qrecipe reproduce DIR`")
    refuse_searchpath(args.overrides)
    if args.config_dir is None:
        return Route(list(argv))
    check_path_arg(args.config_dir, "--config-dir")
    run_dir = Path(args.config_dir)
    check_no_symlinks(run_dir, key="--config-dir")  # a run directory is data (its lock too)
    if args.config_name not in LOCK_NAMES or not (run_dir / LOCK).is_file():
        raise QRecipeError(f"--config-dir takes a run directory with {LOCK} (and --config-name "
                           f"{LOCK_NAMES[0]}), not {args.config_dir!r}; {HINT}")
    private = private_copy(run_dir)
    args.config_dir = str(private)
    return Route(_unparse(args), private)


def refuse_searchpath(overrides: List[str]) -> None:
    """hydra.searchpath (+, ++, ~ and / spellings) adds folders Hydra composes from: refused
    in a run's overrides and in those of show and validate (qrecipe/recipes/compose.py)."""
    parser = OverridesParser.create()
    for text in overrides:
        try:
            key = parser.parse_override(text).key_or_group.replace("/", ".")
        except HydraException:
            continue  # Hydra says what is wrong with it, in its own words
        if key == "hydra.searchpath" or key.startswith("hydra.searchpath."):
            raise QRecipeError(f"hydra.searchpath is not accepted (Hydra would compose files no "
                               f"check has read): {text!r}; {HINT}")


def _unparse(args: argparse.Namespace) -> List[str]:
    """An argv that Hydra's parser reads back as `args` (canonical spellings)."""
    out: List[str] = []
    for action in get_args_parser()._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or isinstance(action, argparse._VersionAction):
            continue
        if isinstance(action, argparse._StoreTrueAction):
            out += [action.option_strings[0]] if value else []
        elif value is not None:
            out.append(f"{action.option_strings[0]}={value}")
    return out + list(args.overrides)
