"""Reading a frozen config (recipe.lock.yaml) back: the same safety rules as a recipe (a run
directory travels between teams too), then the schema, so a lock written by an older qrecipe
that no longer composes says which key changed. No torch."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qrecipe.errors import QRecipeError
from qrecipe.recipes.safety import load_recipe


def check_lock(path: Path) -> DictConfig:
    from qrecipe.recipes.schema import METHOD_SCHEMAS, SCHEMA_VERSION, Config

    cfg, _ = load_recipe(path, lock=True)
    body = OmegaConf.to_container(cfg, resolve=False)
    body.pop("defaults", None)
    body.pop("hydra", None)  # frozen.LOCK_HYDRA, checked by load_recipe: not part of the schema
    version = body.get("schema_version", 0)  # locks from before the field existed: 0
    where = (f"{path} (schema version {version}; this qrecipe reads version {SCHEMA_VERSION})")
    method = (body.get("method") or {}).get("name")
    if method not in METHOD_SCHEMAS:
        raise QRecipeError(f"{where}: unknown method", key="method.name", value=method,
                           allowed=sorted(METHOD_SCHEMAS))
    schema = OmegaConf.structured(Config)
    schema.method = OmegaConf.structured(METHOD_SCHEMAS[method])
    try:
        return OmegaConf.merge(schema, body)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        reason = str(e).splitlines()[0]
        raise QRecipeError(f"{where}: key {key} no longer composes: {reason}",
                           hint="the key was renamed or removed since this lock was written; "
                                "edit the lock or re-run the recipe") from None
