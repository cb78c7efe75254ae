"""The one loader every recipe goes through (project, folder or pack; run, dry run, show,
validate, reproduce): a recipe is data, so anything that would make qrecipe run code, read the
environment or read files of the recipe author's choosing is refused before Hydra sees it.

Refused, at any depth, with one message naming the file and the key:
- `_target_`, `_partial_`, `_args_`, `_recursive_`, `_convert_` (Hydra's instantiate keys);
- a `hydra:` section other than `hydra.sweeper.params` (callbacks, launchers, run dirs,
  search paths and logging stay on the command line or in conf/), a defaults entry that selects
  a `hydra/` group, moves a config to another package (`@`) or climbs out of the config groups
  (`..`, which would load any YAML file on the machine), a `# @package` header other than
  `_global_`, and sweep parameters that do any of the above;
- any interpolation other than a plain reference to another config key (`${bits.width}`):
  resolvers such as `${oc.env:...}`, `${oc.decode:...}` or custom ones, and references to
  `cache.*` (resolved from the environment);
- the user-only keys (qrecipe/boundary/userkeys.py: `force`, `cache.*`, `trust_remote_code`,
  `model.allow_pickle`, `hydra.*`), in the file and in its sweep parameters; a lock may hold
  all but `hydra.*`, and they are dropped when it is read;
- a `recipe_name` that is not one plain name (it names the run directory: no paths);
- a `pkg://a.b/FILE` path (finding a dotted package imports its parent: runs its code).
The file is read within limits first (qrecipe/boundary/yamlfile.py: size, no tags, aliases,
depth, control characters), then built by OmegaConf's safe loader.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from qrecipe.boundary.userkeys import SWEEP_PARAMS as ALLOWED_HYDRA
from qrecipe.boundary.userkeys import dropped_from_locks, refusal, segments, without_user_only
from qrecipe.boundary.yamlfile import printable, read_yaml
from qrecipe.errors import QRecipeError
from qrecipe.paths import PKG_SCHEME
from qrecipe.recipes.frozen import (  # the hydra: blocks a lock may hold
    LEGACY_LOCK_HYDRAS,
    LOCK_DEFAULTS,
    LOCK_HYDRA,
)

INSTANTIATE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
_PLAIN_REF = re.compile(r"\.*[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*)*")
_ENV_DERIVED = ("cache", "hydra")
# A recipe_name, and a recipe file's stem given by path: one plain name (a folder, an override).
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class UnsafeRecipe(QRecipeError):
    def __init__(self, path: Path, key: str, reason: str):
        super().__init__(printable(f"{path}: {key}: {reason}"),
                         hint="a recipe is data; see README, 'Sharing recipes'")
        self.path, self.key = path, key


def header(text: str) -> Dict[str, Optional[str]]:
    """Hydra's own header parser, on the same first 512 characters Hydra reads."""
    from hydra.plugins.config_source import ConfigSource
    return ConfigSource._get_header_dict(text[:512])


def load_recipe(path: Path, lock: bool = False) -> Tuple[DictConfig, Dict[str, Optional[str]]]:
    """Parse and check one recipe file; returns its (unresolved) config and Hydra header.
    `lock`: the file is a recipe.lock.yaml, whose defaults list is fixed (LOCK_DEFAULTS) and
    whose user-only keys are dropped from what is returned."""
    path = Path(path)
    text, data = read_yaml(path, "lock" if lock else "recipe")
    try:
        head = header(text)
        cfg = OmegaConf.create(data if data is not None else {})
    except Exception as e:  # omegaconf's own refusals (odd keys)
        raise QRecipeError(printable(f"{path}: not a valid recipe: "
                                     f"{str(e).splitlines()[0]}")) from None
    if not isinstance(cfg, DictConfig):
        raise QRecipeError(f"{printable(path)}: a recipe is a YAML mapping")
    check(path, cfg, head, lock)
    if lock:
        cfg = OmegaConf.create(without_user_only(OmegaConf.to_container(cfg, resolve=False)))
    return cfg, head


def check(path: Path, cfg: DictConfig, head: Dict[str, Optional[str]], lock: bool = False) -> None:
    if head.get("package") not in (None, "_global_"):
        raise UnsafeRecipe(path, "# @package", f"{head['package']!r} is not allowed (recipes are "
                           "`# @package _global_` files)")
    raw = OmegaConf.to_container(cfg, resolve=False)
    defaults = raw.pop("defaults", [])
    _check_defaults(path, defaults, lock)
    hydra = raw.pop("hydra", None)
    if lock and (hydra == LOCK_HYDRA or hydra in LEGACY_LOCK_HYDRAS):
        hydra = None  # qrecipe's own run-directory guard, written by frozen.write_lock
    if hydra is not None:
        _check_hydra(path, hydra)
        raw["hydra"] = hydra
    name = raw.get("recipe_name")
    if name is not None and not (isinstance(name, str) and PLAIN_NAME.fullmatch(name)):
        raise UnsafeRecipe(path, "recipe_name", f"{name!r}: names the run directory, so it is "
                           "one plain name (letters, digits, _ . -), never a path")
    for key, value in _walk(raw):
        _check_key(path, key, lock)
        if isinstance(value, str):
            _check_interpolations(path, key, value)
            _check_package_path(path, key, value)
    for i, entry in enumerate(defaults):
        for key, value in _walk(entry, f"defaults[{i}]"):
            if isinstance(value, str):
                _check_interpolations(path, key, value)


def _walk(node: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """(dotted key, value) of every node; keys themselves are yielded too (as values None)."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            yield key, None
            if isinstance(k, str) and "${" in k:
                yield key, k
            yield from _walk(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{prefix}[{i}]")
    else:
        yield prefix, node


def _check_key(path: Path, key: str, lock: bool = False, shown: Optional[str] = None) -> None:
    """`shown`: the key as the message names it (a sweep parameter's full path)."""
    for s in segments(key):
        if s in INSTANTIATE_KEYS:
            raise UnsafeRecipe(path, shown or key, f"{s} is not allowed: a recipe cannot name "
                               "code to run")
    if lock and dropped_from_locks(key):
        return  # frozen by a run; dropped by load_recipe, never used
    why = refusal(key)
    if why:
        raise UnsafeRecipe(path, shown or key, why)


def _check_hydra(path: Path, hydra: Any) -> None:
    if not isinstance(hydra, dict) or set(hydra) - {"sweeper"}:
        bad = sorted(set(hydra) - {"sweeper"}) if isinstance(hydra, dict) else []
        key = f"hydra.{bad[0]}" if bad else "hydra"
        raise UnsafeRecipe(path, key, refusal(key))
    sweeper = hydra["sweeper"]
    if not isinstance(sweeper, dict) or set(sweeper) - {"params"}:
        bad = sorted(set(sweeper) - {"params"}) if isinstance(sweeper, dict) else []
        raise UnsafeRecipe(path, f"hydra.sweeper.{bad[0]}" if bad else "hydra.sweeper",
                           f"a recipe may only set {ALLOWED_HYDRA} under hydra:")
    params = sweeper["params"] or {}
    if not isinstance(params, dict):
        raise UnsafeRecipe(path, ALLOWED_HYDRA, "must map override keys to sweep values")
    for k, v in params.items():
        # A sweep parameter is an override applied to every job: the same rules hold for it.
        _check_key(path, str(k), shown=f"{ALLOWED_HYDRA}.{k}")
        if segments(str(k))[:1] == ["hydra"] or "@" in str(k):
            raise UnsafeRecipe(path, f"{ALLOWED_HYDRA}.{k}", "a sweep may not set hydra's own "
                               "config or move a config to another package")
        if ".." in f"{k}={v}":
            raise UnsafeRecipe(path, f"{ALLOWED_HYDRA}.{k}", "'..' would load a file outside "
                               "the config groups")
        if not isinstance(v, (str, int, float, bool)) and v is not None:
            raise UnsafeRecipe(path, f"{ALLOWED_HYDRA}.{k}", "a sweep value is one string")


def _check_defaults(path: Path, defaults: Any, lock: bool) -> None:
    if lock:
        if defaults != list(LOCK_DEFAULTS):
            raise UnsafeRecipe(path, "defaults", f"a lock's defaults are fixed: {LOCK_DEFAULTS}")
        return
    if not isinstance(defaults, list):
        raise UnsafeRecipe(path, "defaults", "must be a list")
    for i, entry in enumerate(defaults):
        if isinstance(entry, str):
            text = entry
        elif isinstance(entry, dict) and len(entry) == 1:
            text = f"{next(iter(entry))}: {next(iter(entry.values()))}"
        else:
            raise UnsafeRecipe(path, f"defaults[{i}]", "an entry is `group: option` or a name")
        words = text.replace("override ", " ").replace("optional ", " ").split(":")[0]
        group = words.strip().lstrip("/")
        if group == "hydra" or group.startswith("hydra/") or "@" in text:
            raise UnsafeRecipe(path, f"defaults[{i}]", f"{text!r}: a recipe may not select "
                               "hydra's own config groups or move a config to another package")
        if ".." in text:
            raise UnsafeRecipe(path, f"defaults[{i}]", f"{text!r}: a recipe selects options by "
                               "name; '..' would load a file outside the config groups")


def _check_interpolations(path: Path, key: str, value: str) -> None:
    # Escaped ones (\\${...}) too: resolved once, they are live interpolations in the lock.
    i = value.find("${")
    while i != -1:
        end = value.find("}", i)
        body = value[i + 2:end].strip() if end != -1 else value[i + 2:]
        if not _PLAIN_REF.fullmatch(body) or "${" in body:
            raise UnsafeRecipe(path, key, f"interpolation {value[i:end + 1]!r} is not allowed: a "
                               "recipe may reference other config keys (${group.key}) but not "
                               "call resolvers (oc.env, oc.decode, ...) that read the "
                               "environment or files")
        if body.lstrip(".").split(".")[0] in _ENV_DERIVED:
            raise UnsafeRecipe(path, key, f"interpolation {value[i:end + 1]!r} is not allowed: "
                               f"{body} comes from the environment or Hydra's runtime")
        i = value.find("${", i + 2)


def _check_package_path(path: Path, key: str, value: str) -> None:
    """pkg://PACKAGE/FILE is located without importing PACKAGE; a dotted name (a.b) would
    import its parent package a, i.e. run that package's code."""
    if value.startswith(PKG_SCHEME) and "." in value[len(PKG_SCHEME):].split("/")[0]:
        raise UnsafeRecipe(path, key, f"{value!r}: pkg:// names a top-level package (a dotted "
                           "name would import its parent package)")
