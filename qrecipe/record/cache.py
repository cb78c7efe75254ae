"""A fingerprint-keyed cache shared by runs and by the concurrent jobs of a sweep.

Entries are immutable: a key names its content (sha256 of everything that went into it), so two
jobs computing the same entry write the same bytes. Writes go to a temp file in the same folder
and are renamed into place, which is atomic on POSIX: a reader sees a whole entry or none.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        self.hits: list[str] = []  # "kind/key" of every hit, recorded in metrics.json

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}{suffix}"

    def _write(self, path: Path, write) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_json(self, kind: str, key: str) -> Optional[Any]:
        p = self._path(kind, key, ".json")
        if not p.is_file():
            return None
        self.hits.append(f"{kind}/{key[:12]}")
        return json.loads(p.read_text())

    def save_json(self, kind: str, key: str, value: Any) -> None:
        data = json.dumps(value, indent=2, sort_keys=True).encode()
        self._write(self._path(kind, key, ".json"), lambda f: f.write(data))

    def load_tensor(self, kind: str, key: str):
        p = self._path(kind, key, ".pt")
        if not p.is_file():
            return None
        import torch
        self.hits.append(f"{kind}/{key[:12]}")
        return torch.load(p, weights_only=True)

    def save_tensor(self, kind: str, key: str, tensor) -> None:
        import torch
        self._write(self._path(kind, key, ".pt"), lambda f: torch.save(tensor, f))
