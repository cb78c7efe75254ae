"""Hydra's `recipe` group, served from every recipe source (qrecipe/recipes/sources.py) through
the one safe loader (qrecipe/recipes/safety.py).

A ConfigSource (scheme `qrecipe://`) answers for `recipe/NAME` and `recipe/PACK/NAME`; a
SearchPathPlugin appends it to the search path of qrecipe's own app (recognised by its primary
config dir), so `+recipe=NAME` works as before, with `--cfg job`, sweeps, and Hydra's compose API
alike. Both are registered in-process by `register()` (no hydra_plugins package to install).
A recipe that includes itself through its defaults list (directly or through other recipes)
is refused with one line naming the chain, before Hydra would recurse without end.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from qrecipe.errors import QRecipeError
from qrecipe.paths import config_dir
from qrecipe.recipes import sources as recipe_sources
from qrecipe.recipes.safety import load_recipe

GROUP = "recipe"
SCHEME = "qrecipe"
MAX_INCLUDE_DEPTH = 8  # recipes including recipes, this deep at most


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
    """A refused recipe (unsafe, clashing, unreadable, including itself): one line, which the
    CLI prints after its own `error: ` (exit 2)."""


def _find(name: str):
    try:
        return recipe_sources.find(name)
    except QRecipeError as e:
        raise RecipeRefused(str(e)) from None


def _defaults(recipe) -> Any:
    """The defaults list of a recipe, read through the safe loader."""
    try:
        cfg = load_recipe(recipe.path)[0]
    except QRecipeError as e:
        raise RecipeRefused(str(e)) from None
    return OmegaConf.to_container(cfg, resolve=False).get("defaults")


def _included(group: str, defaults: Any) -> List[Tuple[str, str]]:
    """(config path under `recipe/`, its name) of each recipe a defaults list includes, read as
    Hydra reads it from a config in `group` (absolute `/recipe: X`, relative `PACK: X` or `X`)."""
    out = []
    for entry in defaults if isinstance(defaults, list) else []:
        if isinstance(entry, str):
            pairs = [(entry, None)]
        elif isinstance(entry, dict) and len(entry) == 1:
            key, value = next(iter(entry.items()))
            pairs = [(key, v) for v in (value if isinstance(value, list) else [value])]
        else:
            continue
        for key, option in pairs:
            words = str(key).split()
            where = words[-1] if words else ""
            if where == "_self_" or (option is None and isinstance(entry, dict)):
                continue
            path = where if option is None else f"{where}/{option}"
            path = path.lstrip("/") if path.startswith("/") else f"{group}/{path}"
            name = _split(path)
            if name is not None:
                out.append((path.rsplit("/", 1)[0], name))
    return out


def _check_includes(group: str, defaults: Any, chain: Tuple) -> None:
    """Follow the recipes `defaults` includes; a recipe met again on the way is a cycle."""
    for sub_group, sub in _included(group, defaults):
        recipe = _find(sub)
        if recipe is None:
            continue  # Hydra names the missing one
        names = [n for n, _ in chain] + [sub]
        if recipe.path in {p for _, p in chain}:
            raise RecipeRefused(f"recipe {chain[0][0]!r} includes itself through its defaults "
                                f"list ({' -> '.join(names)}): remove the entry that closes "
                                "the circle")
        if len(chain) >= MAX_INCLUDE_DEPTH:
            raise RecipeRefused(f"recipe {chain[0][0]!r} includes recipes more than "
                                f"{MAX_INCLUDE_DEPTH} deep ({' -> '.join(names)})")
        _check_includes(sub_group, _defaults(recipe), chain + ((sub, recipe.path),))


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
            raise RecipeRefused(str(e)) from None
        group = config_path.strip("/").rsplit("/", 1)[0]
        _check_includes(group, OmegaConf.to_container(cfg, resolve=False).get("defaults"),
                        ((name, recipe.path),))
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
        ours = {f"file://{config_dir()}", str(config_dir())}
        if any(e.path in ours for e in search_path.get_path()):
            search_path.append(provider="qrecipe recipes", path=f"{SCHEME}://{GROUP}")


def register() -> None:
    plugins = Plugins.instance()
    for cls in (RecipeSource, RecipeSearchPath):
        if cls not in plugins.discover(cls.__mro__[1]):
            plugins.register(cls)
