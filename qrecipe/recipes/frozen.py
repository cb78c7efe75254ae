"""What a frozen config (recipe.lock.yaml) looks like: its file name, its fixed defaults list and
hydra: block, and how it is written. Reading one back is qrecipe/recipes/lock.py. No torch."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from qrecipe.boundary.rundir import write_text_nofollow
from qrecipe.boundary.userkeys import DROPPED_FROM_LOCKS, without_user_only

LOCK = "recipe.lock.yaml"
# The lock's own defaults (write_lock): the only hydra/ entry any loaded file may carry.
LOCK_DEFAULTS = ("qrecipe_schema", {"override hydra/job_logging": "qrecipe"}, "_self_")
# The user's own keys (where the cache is, whether to move an old result aside, whether to trust
# code or pickles) are the user's choice for one invocation, from the command line only
# (qrecipe/boundary/userkeys.py): never part of the recipe a lock repeats, nor of what a run is.
NOT_FROZEN = DROPPED_FROM_LOCKS
# Hydra settings a lock needs to re-run safely into an existing directory (qrecipe/run/rundir.py).
# The one hydra: block a lock may hold: recipe_safety accepts exactly this, nothing else.
LOCK_HYDRA = {"output_subdir": "${qrecipe_hydra_subdir:${hydra.runtime.output_dir}}",
              "callbacks": {"output_check": {"_target_": "qrecipe.run.rundir.OutputCheck"}}}


def write_lock(out: Path, cfg: DictConfig) -> Path:
    """A fully resolved, standalone config: `python -m qrecipe --config-dir DIR
    --config-name recipe.lock` repeats the run (into a new output directory)."""
    body = without_user_only(OmegaConf.to_container(cfg, resolve=True))
    text = ("# Frozen by qrecipe: every value resolved. Repeat this run with\n"
            f"#   python -m qrecipe --config-dir {out} --config-name recipe.lock\n"
            "defaults:\n  - qrecipe_schema\n  - override hydra/job_logging: qrecipe\n"
            "  - _self_\n\n" + OmegaConf.to_yaml(OmegaConf.create(body))
            + OmegaConf.to_yaml(OmegaConf.create({"hydra": LOCK_HYDRA})))
    path = out / LOCK
    write_text_nofollow(out, path, text)  # a run directory: never through a symbolic link
    return path


# Locks written before the subpackage layout name the callback by its old module path
# (qrecipe/rundir.py still answers to it).
LEGACY_LOCK_HYDRAS = ({**LOCK_HYDRA, "callbacks": {"output_check": {
    "_target_": "qrecipe.rundir.OutputCheck"}}},)
