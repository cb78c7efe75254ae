"""A fingerprint-keyed cache shared by runs and by the concurrent jobs of a sweep.

Entries are immutable: a key names its content (sha256 of everything that went into it), so two
jobs computing the same entry write the same bytes. Writes are atomic (qrecipe/record/atomic.py):
a reader sees a whole entry or none.

An entry is used only if it proves qrecipe wrote it for this key: beside KEY.json / KEY.pt a
sidecar KEY.json.seal holds the entry's sha256 and a seal over (kind, key, sha256) under this
user's key (qrecipe/boundary/sealed.py). An entry planted in the cache directory, edited, or
copied from another key does not verify: it is ignored and computed again (one log line), and
the bytes are checked against the sha256 before they are parsed. A folder entry (the
dequantized GGUF model, qrecipe/inputs/models.py) carries the same inside it: `seal_folder`
before it is renamed into place, `verify_folder` before it is reused.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

from qrecipe.boundary import sealed
from qrecipe.record.atomic import write_bytes
from qrecipe.record.fingerprint import sha256_files
from qrecipe.record.outputs import load_json

log = logging.getLogger("qrecipe")

SEAL_SUFFIX = ".seal"
FOLDER_SEAL = ".qrecipe-seal.json"


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        self.hits: list[str] = []  # "kind/key" of every hit, recorded in metrics.json

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}{suffix}"

    def _read(self, kind: str, key: str, suffix: str) -> Optional[bytes]:
        """The entry's bytes if it is there and verifies; None (computed again) otherwise."""
        p = self._path(kind, key, suffix)
        if not p.is_file():
            return None
        data = p.read_bytes()
        side = load_json(p.with_name(p.name + SEAL_SUFFIX)) or {}
        sha = hashlib.sha256(data).hexdigest()
        if not sealed.verify(f"cache:{kind}/{p.name}", {"sha256": sha}, side.get(sealed.SEAL)):
            why = "no seal" if not side else "its seal does not match its content or key"
            log.warning("cache: %s/%s not verified (%s); computing it again", kind, key[:12], why)
            return None
        self.hits.append(f"{kind}/{key[:12]}")
        return data

    def _write(self, kind: str, key: str, suffix: str, data: bytes) -> None:
        p = self._path(kind, key, suffix)
        write_bytes(p, data)
        side = {sealed.SEAL: sealed.seal(f"cache:{kind}/{p.name}",
                                         {"sha256": hashlib.sha256(data).hexdigest()})}
        write_bytes(p.with_name(p.name + SEAL_SUFFIX), json.dumps(side).encode())

    def load_json(self, kind: str, key: str) -> Optional[Any]:
        data = self._read(kind, key, ".json")
        return None if data is None else json.loads(data)

    def save_json(self, kind: str, key: str, value: Any) -> None:
        self._write(kind, key, ".json", json.dumps(value, indent=2, sort_keys=True).encode())

    def load_tensor(self, kind: str, key: str):
        data = self._read(kind, key, ".pt")
        if data is None:
            return None
        import torch  # deferred: torch, only for tensor entries
        return torch.load(io.BytesIO(data), weights_only=True)

    def save_tensor(self, kind: str, key: str, tensor) -> None:
        import torch  # deferred: torch, only for tensor entries
        buf = io.BytesIO()
        torch.save(tensor, buf)
        self._write(kind, key, ".pt", buf.getvalue())


def _folder_files(folder: Path) -> Dict[str, str]:
    """{relative path: sha256} of every file in a folder entry (its seal aside); a symbolic
    link or special file is listed as such, so it never matches a sealed entry."""
    files, odd = [], {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_symlink() or not (p.is_dir() or p.is_file()):
            odd[str(p.relative_to(folder))] = "not a regular file"
        elif p.is_file() and p.name != FOLDER_SEAL:
            files.append(p)
    return {**{str(p.relative_to(folder)): d for p, d in sha256_files(files).items()}, **odd}


def seal_folder(folder: Path, name: Optional[str] = None) -> None:
    """Seal a folder entry qrecipe has just written, before it is renamed into place as `name`
    (default: its own name, the cache key): FOLDER_SEAL inside it names every file's sha256."""
    body = {"files": _folder_files(folder)}
    doc = sealed.sealed(f"cache-folder:{name or Path(folder).name}", body)
    write_bytes(Path(folder) / FOLDER_SEAL, json.dumps(doc, indent=2).encode())


def verify_folder(folder: Path) -> bool:
    """Whether a folder entry is one qrecipe sealed under this name and is unchanged since;
    False (one log line) means: do not use it, make it again."""
    folder = Path(folder)
    body = sealed.unsealed(f"cache-folder:{folder.name}", load_json(folder / FOLDER_SEAL))
    if body is None:
        why = "no valid seal"
    elif body.get("files") != _folder_files(folder):
        why = "its files differ from what its seal names"
    else:
        return True
    log.warning("cache: %s not verified (%s); making it again", folder, why)
    return False
