"""A model folder from outside (a local model, a hub snapshot, the cache's dequantized copy of a
GGUF) is data: it is checked before transformers or gptqmodel sees it, because both import Python
a folder names. `auto_map` in config.json makes gptqmodel's loader import the folder's module
even with trust_remote_code off (and may name code in another hub repository); a tokenizer's
`auto_map` does the same for AutoTokenizer. So a folder whose config files name code, or that
holds any file Python could import (*.py, *.pyc, extension modules; in any subfolder, through
symlinks too), is refused unless the user passed trust_remote_code=true on the command line
(recipes may not set it: qrecipe/boundary/userkeys.py). Nothing is stripped silently: the user
sees the file and decides. In any case the config files must be JSON objects within limits
(qrecipe/boundary/jsonfile.py), and the folder holds no FIFO, device or socket (reading one
never ends)."""
from __future__ import annotations

import importlib.machinery
import os
import stat
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple

from qrecipe.boundary.jsonfile import read_object
from qrecipe.errors import QRecipeError

# The files a loader reads that can point at code (AutoConfig/AutoModel, AutoTokenizer,
# AutoProcessor), and the keys in them that do.
CONFIG_FILES = ("config.json", "tokenizer_config.json", "processor_config.json",
                "preprocessor_config.json")
CODE_KEYS = ("auto_map", "custom_pipelines")
# Every suffix the import system loads a module from: .py, .pyc, .so, .abi3.so, ...
CODE_SUFFIXES = tuple(importlib.machinery.all_suffixes())
MAX_ENTRIES = 100_000  # a model folder has tens of files; past this it is not one
TRUST_HINT = "pass trust_remote_code=true on the command line if you trust this folder's code"


def check_model_folder(path: Path, trust_remote_code: bool, key: str = "model.path",
                       hint: str = TRUST_HINT) -> None:
    """Refuse (one QRecipeError naming the file and `key`) a folder whose config files are not
    JSON objects, that holds a FIFO, device or socket (a reader would wait on it forever: the
    fingerprint reads every *.json), or, unless trust_remote_code, that names or holds code."""
    folder = Path(path)
    check_config_files(folder, trust_remote_code, key, hint)
    for entry, special in flagged(folder, key):
        rel = str(entry.relative_to(folder))
        if special:
            raise QRecipeError(f"{rel!r} in the model folder is not a regular file or folder "
                               "(a FIFO, device or socket)", key=key, value=str(entry))
        if not trust_remote_code:
            raise QRecipeError(f"the model folder holds Python code ({rel!r}) that a loader "
                               "can import and run", key=key, value=str(entry), hint=hint)


def check_config_files(folder: Path, trust_remote_code: bool, key: str = "model.path",
                       hint: str = TRUST_HINT) -> None:
    """The config files of `folder` that exist are JSON objects within limits and, unless
    trust_remote_code, none has a key naming code, at any depth (text_config.auto_map too)."""
    for name in CONFIG_FILES:
        f = Path(folder) / name
        if not os.path.lexists(f):  # lexists: a dangling symlink is refused by read_object
            continue
        where = find_key(read_object(f, key), CODE_KEYS)
        if where is not None and not trust_remote_code:
            raise QRecipeError(f"{name} has {where!r}, which names Python code that "
                               "transformers or gptqmodel would import and run", key=key,
                               value=str(f), hint=hint)


def find_key(value: Any, names: tuple) -> Optional[str]:
    """The dotted path of the first key in `names`, at any depth of `value`; None if absent."""
    todo = [(value, "")]
    while todo:
        v, where = todo.pop()
        if isinstance(v, dict):
            for k, child in v.items():
                path = f"{where}.{k}" if where else str(k)
                if k in names:
                    return path
                todo.append((child, path))
        elif isinstance(v, list):
            todo.extend((child, f"{where}[{i}]") for i, child in enumerate(v))
    return None


def flagged(folder: Path, key: str = "model.path") -> Iterator[Tuple[Path, bool]]:
    """(entry, special) for every entry under `folder` named like an importable module
    (special False) or that is neither a regular file nor a folder (special True), symlinks
    followed; symlinked subfolders too, each real folder once (a symlink loop ends)."""
    seen, todo, count = set(), [Path(folder)], 0
    while todo:
        d = todo.pop()
        try:
            st = d.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(d))
        except OSError as e:  # a folder we cannot list may still hold a module a loader opens
            raise QRecipeError(f"cannot list {d.name!r} ({e.strerror}) to check it holds no "
                               "Python code", key=key, value=str(d)) from None
        for e in entries:
            count += 1
            if count > MAX_ENTRIES:
                raise QRecipeError(f"more than {MAX_ENTRIES} files under the model folder: "
                                   "not a model folder", key=key, value=str(folder))
            kind = _kind(e)
            if e.name.lower().endswith(CODE_SUFFIXES) or kind == "special":
                yield Path(e.path), kind == "special"
            elif kind == "dir":
                todo.append(Path(e.path))


def _kind(entry: os.DirEntry) -> str:
    """dir, file, special (FIFO, device, socket) or missing (a dangling symlink: the loader
    that needs it says so)."""
    try:
        mode = entry.stat(follow_symlinks=True).st_mode
    except OSError:
        return "missing"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "special"
