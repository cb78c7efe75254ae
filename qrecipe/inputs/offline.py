"""What a job needs from the Hugging Face hub, refused before any work when the hub is off.

With HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1; HF_DATASETS_OFFLINE=1 for data sets) the
libraries read only their local cache: a hub model, data set or lm-eval task that is not there
would fail after the model was loaded, or after quantizing (evaluation comes last). Validation
asks here first, from the cache's folders only: nothing is fetched, no torch. Online nothing is
refused: the files are fetched when the job runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional

from qrecipe.errors import QRecipeError

# The environment variables huggingface_hub, transformers and datasets read (their own rule:
# 1/ON/YES/TRUE, any case).
_MODEL_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_DATA_VARS = (*_MODEL_VARS, "HF_DATASETS_OFFLINE")
_TRUE = ("1", "ON", "YES", "TRUE")


def _set(names: Iterable[str]) -> Optional[str]:
    return next((n for n in names if os.environ.get(n, "").strip().upper() in _TRUE), None)


def hub_off() -> Optional[str]:
    """The variable that turns the hub off for models (None: the hub may be reached)."""
    return _set(_MODEL_VARS)


def _hub_cache() -> Path:
    from huggingface_hub import constants  # deferred: huggingface_hub (only offline)
    return Path(constants.HF_HUB_CACHE)


def _snapshots(repo_type: str, repo_id: str) -> List[Path]:
    folder = _hub_cache() / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    return sorted(p for p in folder.glob("*") if p.is_dir()) if folder.is_dir() else []


def model_cached(repo_id: str, allow_pickle: bool = False) -> bool:
    """A snapshot of the hub model with its config.json and weights in the local cache."""
    suffixes = (".safetensors", ".bin", ".pt", ".pth") if allow_pickle else (".safetensors",)
    return any((s / "config.json").is_file() and any(f.suffix in suffixes for f in s.iterdir())
               for s in _snapshots("model", repo_id))


def dataset_cached(repo_id: str) -> bool:
    """The hub data set in huggingface_hub's cache, or prepared in the datasets library's own
    cache (which names a folder ORG___NAME)."""
    if _snapshots("dataset", repo_id):
        return True
    from huggingface_hub import constants  # deferred: huggingface_hub (only offline)
    home = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
    return (home / repo_id.replace("/", "___")).is_dir()


def check_model(model) -> None:
    """model (the config's `model` section) is a hub model the cache holds, or not a hub model."""
    var = hub_off()
    if var is None or model.source != "hub":
        return
    if not model_cached(str(model.path), bool(model.get("allow_pickle", False))):
        raise QRecipeError(f"{var} is set and this hub model is not in the local Hugging Face "
                           f"cache ({_hub_cache()})", key="model.path", value=model.path,
                           hint="download it once online (or unset the variable), or give a "
                                "local copy: model=local model.path=DIR")


def check_text(section: str, source: str, path: Optional[str], local_hint: str) -> None:
    """A calibration or eval text from the hub: in the cache, when the hub is off."""
    var = _set(_DATA_VARS)
    if var is None or source != "hub" or (path and dataset_cached(str(path))):
        return
    raise QRecipeError(f"{var} is set and this hub data set is not in the local Hugging Face "
                       "cache", key=f"{section}.path", value=path, hint=local_hint)


def check_tasks(names: List[str], local: Iterable[str]) -> None:
    """lm-eval tasks other than the ones shipped inside qrecipe download their data set."""
    var = _set(_DATA_VARS)
    hub = [n for n in names if n not in set(local)]
    if var is not None and hub:
        raise QRecipeError(f"{var} is set and these lm-eval tasks download their data set from "
                           "the hub", key="eval.tasks", value=hub,
                           allowed=f"offline: {', '.join(sorted(local))}")
