"""Config-only composition for the commands (show, validate): Hydra's compose API on qrecipe's
own config dir, every recipe source included. Hydra's errors become QRecipeError (exit 2).
No torch here."""
from __future__ import annotations

import itertools
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Sequence

from hydra import compose as hcompose
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from qrecipe.environ import env_set
from qrecipe.errors import QRecipeError
from qrecipe.paths import config_dir
from qrecipe.recipes import schema
from qrecipe.recipes.routes import refuse_searchpath
from qrecipe.recipes.sources import ENV_PATH


def compose(overrides: Sequence[str], with_hydra: bool = False) -> DictConfig:
    """with_hydra: keep the `hydra` node (the launcher a sweep names, for `plan --sweep`)."""
    schema.register()
    refuse_searchpath(list(overrides))
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
            return hcompose(config_name="config", overrides=list(overrides),
                            return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as e:
        msg = str(e).strip()
        cause = e.__cause__
        if cause is not None and str(cause).strip() not in msg:
            msg += f" ({str(cause).strip().splitlines()[0]})"
        raise QRecipeError(" ".join(msg.split("\n")[:3])) from None
    except RecursionError:  # a self-inclusion hydra_source could not follow (interpolated)
        raise QRecipeError("composing the config recursed without end: a recipe includes "
                           "itself through its defaults list") from None


@contextmanager
def folder_on_recipe_path(folder: Path) -> Iterator[None]:
    """Let `+recipe=STEM` find a recipe file given by path (validate FILE)."""
    old = os.environ.get(ENV_PATH)
    with env_set(ENV_PATH, os.pathsep.join([str(folder)] + ([old] if old else []))):
        yield


def recipe_overrides(name: str, extra: Sequence[str]) -> List[str]:
    return [f"+recipe={name}", *extra]


def sweep_jobs(overrides: Sequence[str]) -> List[List[str]]:
    """The jobs `python -m qrecipe -m OVERRIDES` launches, each as its overrides, in the order
    Hydra's basic sweeper runs them (the cartesian product of every comma list and sweep
    function, the first override varying slowest)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise QRecipeError(" ".join(str(e).split("\n")[:2])) from None
    choices = []
    for o in parsed:
        key = o.get_key_element()
        choices.append([f"{key}={v}" for v in o.sweep_string_iterator()]
                       if o.is_sweep_override() else [o.input_line])
    return [list(job) for job in itertools.product(*choices)]
