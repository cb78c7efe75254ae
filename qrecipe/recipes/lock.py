"""Reading a frozen config (recipe.lock.yaml) back: the same safety rules as a recipe (a run
directory travels between teams too; nothing is resolved, so `${oc.env:...}` is refused, never
read), then the schema, so a lock written by an older qrecipe that no longer composes says which
key changed. The user-only keys a lock may hold (`cache`, `force`, ...: qrecipe/boundary/
userkeys.py) are dropped, never used. `private_copy` is what Hydra gets to re-run a lock: the
checked lock alone in a fresh private folder. No torch."""
from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qrecipe.errors import QRecipeError
from qrecipe.paths import config_dir
from qrecipe.recipes.frozen import LOCK
from qrecipe.recipes.safety import load_recipe
from qrecipe.recipes.schema import METHOD_SCHEMAS, SCHEMA_VERSION, Config


def check_lock(path: Path) -> DictConfig:
    """The lock at `path`, checked and merged onto the schema (unresolved); QRecipeError else.
    The one way to read a lock from a run directory (resume, reproduce, --config-dir)."""
    return _on_schema(path, load_recipe(path, lock=True)[0])


def _on_schema(path: Path, cfg: DictConfig) -> DictConfig:
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


def private_copy(run_dir: Path) -> Path:
    """A fresh folder (mkdtemp: mode 0700) holding only RUN_DIR's lock, checked by check_lock
    and written back from what was checked (user-only keys dropped), with the run and sweep
    directories of qrecipe's primary config (outputs/runs/RECIPE/TIME, as a normal run) unless
    the command line sets them. The caller removes it."""
    path = Path(run_dir) / LOCK
    cfg, _ = load_recipe(path, lock=True)  # read once: what is checked is what is written
    _on_schema(path, cfg)
    body = OmegaConf.to_container(cfg, resolve=False)
    primary = OmegaConf.load(config_dir() / "config.yaml").hydra  # qrecipe's own file
    hydra = body.setdefault("hydra", {})
    for key in ("run", "sweep"):
        hydra.setdefault(key, OmegaConf.to_container(primary[key], resolve=False))
    folder = Path(tempfile.mkdtemp(prefix="qrecipe-lock-"))
    (folder / LOCK).write_text("# A run directory's lock, checked (qrecipe/recipes/lock.py)\n"
                               + OmegaConf.to_yaml(OmegaConf.create(body)))
    return folder
