"""Where the shipped configs live: inside the package when installed as a wheel, or at the repo
root (conf/, recipes/) when run from a checkout."""
from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def config_dir() -> Path:
    packaged = _PKG / "conf"  # the wheel puts conf/ (and recipes/ as conf/recipe/) here
    if (packaged / "config.yaml").is_file():
        return packaged
    return _PKG.parent / "conf"
