"""Loading safety: weights come from safetensors unless the recipe opts into pickle.

A pickle checkpoint (.bin, .pt, .pth, .ckpt) can run arbitrary code when loaded, so a local
model directory that has only those needs `model.allow_pickle=true`. Files are checked before
any weight is read: a safetensors file must have a readable header whose tensors fit in the file
(a truncated download fails here, not halfway through loading), and a GGUF file must start with
the GGUF magic. A model folder (and a GGUF's separate tokenizer folder) that names or holds
Python code is refused unless trust_remote_code=true was given on the command line
(qrecipe/boundary/modelfolder.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qrecipe.boundary.modelfolder import check_config_files, check_model_folder
from qrecipe.errors import QRecipeError
from qrecipe.inputs.packaged import local_file
from qrecipe.record.stheader import read_header
from qrecipe.paths import resolve_path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
GGUF_MAGIC = b"GGUF"
_MAX_HEADER = 100 * 1024 * 1024


def check_safetensors(path: Path, key: str = "model.path") -> None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n, header = read_header(f, min(size - 8, _MAX_HEADER))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
                  default=0)
        if 8 + n + end > size:
            raise ValueError(f"truncated: tensors need {8 + n + end} bytes, file has {size}")
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise QRecipeError(f"corrupt safetensors file {path.name} ({e})", key=key,
                           value=str(path), hint="download or copy the model again") from None


def check_gguf(path: Path, key: str = "model.path") -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise QRecipeError(f"not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})",
                           key=key, value=str(path))


def check_model_dir(path: Path, allow_pickle: bool, key: str = "model.path") -> List[Path]:
    """The weight files a local model directory would be loaded from; raises when there are
    none, when only pickle files exist without the opt-in, or when one is corrupt."""
    files = sorted(Path(path).iterdir())
    safe = [p for p in files if p.suffix == ".safetensors"]
    pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    if safe:
        for p in safe:
            check_safetensors(p, key)
        return safe
    if pickles and not allow_pickle:
        raise QRecipeError(f"only pickle weights ({', '.join(p.name for p in pickles)}), which "
                           "can run code when loaded", key=key, value=str(path),
                           hint="convert them to safetensors, or set model.allow_pickle=true "
                                "if you trust their source")
    if not pickles:
        raise QRecipeError("no weights in the model directory (no *.safetensors)", key=key,
                           value=str(path), hint="pickle checkpoints (.bin, .pt) are only "
                                                 "used with model.allow_pickle=true")
    return pickles


def trusts_code(model_cfg) -> bool:
    """The run's trust_remote_code (top level of the config `model_cfg` belongs to; command line
    only, refused in recipes): read from the model section's parent so that every caller that
    hands a model section over (validation, materialize) applies it without a new argument.
    A detached model section (a test, a plan) trusts nothing."""
    if not isinstance(model_cfg, DictConfig):
        return False
    try:
        return bool(OmegaConf.select(model_cfg, "..trust_remote_code", default=False))
    except OmegaConfBaseException:  # no parent: nothing above the model section
        return False


def check_model(cfg) -> None:
    """Called by validation for local and GGUF models (hub snapshots are checked once
    downloaded, by materialize): loading safety before any library reads the folder."""
    # a GGUF a package assembles is assembled here, once (qrecipe/inputs/packaged.py)
    p = local_file(cfg.path) if cfg.source == "gguf" else resolve_path(cfg.path)
    trust = trusts_code(cfg)
    if cfg.source == "gguf" and p.is_file():
        check_gguf(p)
        check_gguf_folders(cfg, p, trust)
    elif cfg.source == "local" and p.is_dir():
        check_model_folder(p, trust)
        if (p / "config.json").is_file():  # else describe says the folder has none
            check_model_dir(p, bool(cfg.get("allow_pickle", False)))


def check_gguf_folders(cfg, gguf: Path, trust: bool) -> None:
    """The folders transformers reads beside a GGUF: model.tokenizer when it is a folder (all
    of it), and the GGUF's own folder, whose tokenizer_config.json AutoTokenizer still reads
    (its config files only: a GGUF may ship inside a Python package, beside its modules)."""
    tok = cfg.get("tokenizer")
    if tok and resolve_path(tok, key="model.tokenizer").is_dir():
        check_model_folder(resolve_path(tok, key="model.tokenizer"), trust, key="model.tokenizer")
    check_config_files(gguf.parent, trust)
