"""What a frozen config (recipe.lock.yaml) looks like: its file name, its fixed defaults list and
hydra: block, and how it is written. Reading one back is qrecipe/recipes/lock.py. No torch."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

LOCK = "recipe.lock.yaml"
# The lock's own defaults (write_lock): the only hydra/ entry any loaded file may carry.
LOCK_DEFAULTS = ("qrecipe_schema", {"override hydra/job_logging": "qrecipe"}, "_self_")
# Hydra settings a lock needs to re-run safely into an existing directory (qrecipe/run/rundir.py).
# The one hydra: block a lock may hold: recipe_safety accepts exactly this, nothing else.
LOCK_HYDRA = {"output_subdir": "${qrecipe_hydra_subdir:${hydra.runtime.output_dir}}",
              "callbacks": {"output_check": {"_target_": "qrecipe.run.rundir.OutputCheck"}}}


def write_lock(out: Path, cfg: DictConfig) -> Path:
    """A fully resolved, standalone config: `python -m qrecipe --config-dir DIR
    --config-name recipe.lock` repeats the run (into a new output directory)."""
    body = OmegaConf.to_container(cfg, resolve=True)
    body.pop("force", None)  # a one-time instruction, not part of the recipe
    text = ("# Frozen by qrecipe: every value resolved. Repeat this run with\n"
            f"#   python -m qrecipe --config-dir {out} --config-name recipe.lock\n"
            "defaults:\n  - qrecipe_schema\n  - override hydra/job_logging: qrecipe\n"
            "  - _self_\n\n" + OmegaConf.to_yaml(OmegaConf.create(body))
            + OmegaConf.to_yaml(OmegaConf.create({"hydra": LOCK_HYDRA})))
    path = out / LOCK
    path.write_text(text)
    return path


# Locks written before the subpackage layout name the callback by its old module path
# (qrecipe/rundir.py still answers to it).
LEGACY_LOCK_HYDRAS = ({**LOCK_HYDRA, "callbacks": {"output_check": {
    "_target_": "qrecipe.rundir.OutputCheck"}}},)
