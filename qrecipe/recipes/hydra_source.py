"""Hydra's `recipe` group, served from every recipe source (qrecipe/recipes/sources.py) through
the one safe loader (qrecipe/recipes/safety.py).

A ConfigSource (scheme `qrecipe://`) answers for `recipe/NAME` and `recipe/PACK/NAME`; a
SearchPathPlugin appends it to the search path of qrecipe's own app (recognised by its primary
config dir), so `+recipe=NAME` works as before, with `--cfg job`, sweeps, and Hydra's compose API
alike, and a `hydra.searchpath=[...]` override on the command line does not hide it. Both are
registered in-process by `register()` (no hydra_plugins package to install).
"""
from __future__ import annotations

from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin

from qrecipe.errors import QRecipeError
from qrecipe.recipes import sources as recipe_sources
from qrecipe.recipes.safety import load_recipe

GROUP = "recipe"
SCHEME = "qrecipe"


def _split(config_path: str) -> Optional[str]:
    """recipe/NAME(.yaml) or recipe/PACK/NAME -> NAME or PACK/NAME; None for other paths."""
    path = config_path.strip("/")
    if path.endswith(".yaml"):
        path = path[:-5]
    if not path.startswith(GROUP + "/"):
        return None
    name = path[len(GROUP) + 1:]
    return name if name and name.count("/") <= 1 else None


class RecipeRefused(CompactHydraException):
    """A refused recipe (unsafe, clashing, unreadable): Hydra prints just this one line, and
    the CLI turns Hydra's exit code 1 into 2."""


def _find(name: str):
    try:
        return recipe_sources.find(name)
    except QRecipeError as e:
        raise RecipeRefused(f"error: {e}") from None


class RecipeSource(ConfigSource):
    @staticmethod
    def scheme() -> str:
        return SCHEME

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        path = config_path.strip("/")
        if path in ("", GROUP):
            return True
        packs = {r.pack for r in recipe_sources.all_recipes() if r.pack}
        return path.startswith(GROUP + "/") and path[len(GROUP) + 1:] in packs

    def is_config(self, config_path: str) -> bool:
        name = _split(config_path)
        # find() raises for a bare name defined in two places: never a silent pick.
        return name is not None and _find(name) is not None

    def load_config(self, config_path: str) -> ConfigResult:
        name = _split(config_path)
        recipe = _find(name) if name else None
        if recipe is None:
            raise ConfigLoadError(f"Recipe not found: {config_path}")
        try:
            cfg, head = load_recipe(recipe.path)
        except QRecipeError as e:
            raise RecipeRefused(f"error: {e}") from None
        return ConfigResult(config=cfg, path=f"file://{recipe.path.parent}",
                            provider=f"qrecipe {recipe.source}", header=head)

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        path = config_path.strip("/")
        want_groups = results_filter in (None, ObjectType.GROUP)
        want_configs = results_filter in (None, ObjectType.CONFIG)
        recipes = recipe_sources.all_recipes()
        if path == "":
            return [GROUP] if want_groups else []
        if path == GROUP:
            out = sorted({r.name for r in recipes}) if want_configs else []
            # packs are listed as subgroups (recipe/PACK); `project/NAME` works but is not listed
            packs = {r.pack for r in recipes if r.kind == "pack"}
            return out + (sorted(packs) if want_groups else [])
        pack = path[len(GROUP) + 1:]
        return sorted(r.name for r in recipes if r.pack == pack) if want_configs else []


class RecipeSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from qrecipe.paths import config_dir
        ours = {f"file://{config_dir()}", str(config_dir())}
        if any(e.path in ours for e in search_path.get_path()):
            search_path.append(provider="qrecipe recipes", path=f"{SCHEME}://{GROUP}")


def register() -> None:
    plugins = Plugins.instance()
    for cls in (RecipeSource, RecipeSearchPath):
        if cls not in plugins.discover(cls.__mro__[1]):
            plugins.register(cls)
