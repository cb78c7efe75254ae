"""gptqmodel 7.6's per-layer checkpoint store with each object's sha256 checked once per
process, not at every commit.

Why: the store is content-addressed (objects/<sha256>) and reads every object a manifest names
back from disk to hash it, each time it touches that manifest. A manifest names every module
quantized so far and the next layer's inputs, so the commit of layer k hashes layers 0..k's
modules again in put_file, in commit, in the check of the generation it keeps and twice in
collect, and the new and the kept layer inputs twice each: quadratic in the layer count.
Measured on CPU (docs/benchmarks.md, "Per-layer checkpoints: each object hashed once"): the
store alone for the 13B-on-T4 recipe's 40 layers took 1,465 s with 1,312 GB read back, and
338 s with 7 GB read this way; what is left is writing the layer inputs and modules.

Here an object whose sha256 this process has computed (it wrote the object through put or
put_file, or hashed it) is not read again while its stat (size, mtime, ctime, inode, device) is
the one taken around that hash. Any write, truncation or replacement of the file changes its
ctime, which no user call can set back, so a changed object is still hashed and refused. A new
process (a resume) starts with nothing checked: each object it uses is hashed once, as before.
The checks that only verify the layer inputs (commit, a manifest) use the same record instead
of reading the object into memory. The objects, manifests and CURRENT the store writes are the
library's own, byte for byte.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from qrecipe.backends.gptqmodel.patches import CHECKPOINT_VERIFY
from qrecipe.backends.patching import guarded

_STORE = "CheckpointStore"


def _stat(path: Path) -> Optional[Tuple[int, ...]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


@dataclass
class Checked:
    """The objects this process hashed or wrote, each with its stat at that time; the bytes it
    read back to hash (object_path) and those it did not read again (metrics.json,
    quantize_details)."""
    stats: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    hashed_bytes: int = 0
    skipped_bytes: int = 0

    def holds(self, path: Path) -> bool:
        st = self.stats.get(str(path))
        if st is None or st != _stat(path):
            return False
        self.skipped_bytes += st[0]
        return True

    def record(self, path: Path, before: Optional[Tuple[int, ...]]) -> None:
        """After a hash or a write: the file's stat, kept only when it did not change
        meanwhile (`before`: its stat when the hash started; None after a write)."""
        st = _stat(path)
        if st is not None and (before is None or before == st):
            self.stats[str(path)] = st


@contextmanager
def verify_once(on: bool) -> Iterator[Checked]:
    """For one quantize() call with a layer checkpoint (`on`): gptqmodel's CheckpointStore
    hashes each object once. Yields the record, empty where nothing was applied."""
    checked = Checked()
    with guarded(CHECKPOINT_VERIFY, lambda original: _replacements(original, checked), on=on):
        yield checked


def _replacements(original: Dict[str, Any], checked: Checked) -> Dict[str, Any]:
    object_path = original[f"{_STORE}.object_path"]

    def checked_object_path(self, digest: str) -> Path:
        path = self.root / "objects" / str(digest)
        if path.name == digest and checked.holds(path):
            self._check_owner()
            return path
        before = _stat(path)
        out = object_path(self, digest)  # raises CheckpointCorrupt on a bad object
        checked.hashed_bytes += before[0] if before else 0
        checked.record(out, before)
        return out

    def recording(write):
        """put / put_file: the object they stored (named by the sha256 they computed)."""
        def stored(self, source):
            ref = write(self, source)
            checked.record(self.root / "objects" / ref, None)
            return ref
        return stored

    return {f"{_STORE}.object_path": checked_object_path,
            f"{_STORE}.put": recording(original[f"{_STORE}.put"]),
            f"{_STORE}.put_file": recording(original[f"{_STORE}.put_file"]),
            f"{_STORE}._manifest": _manifest, f"{_STORE}.commit": _commit}


def _manifest(self, ref):
    """CheckpointStore._manifest of gptqmodel 7.6.0, the layer inputs verified through
    object_path (hashed once) instead of get (read into memory and hashed every time)."""
    from gptqmodel.looper.checkpoint_store import CheckpointCorrupt
    try:
        manifest = json.loads(self.get(ref))
        if (manifest["version"] != self.VERSION
                or type(manifest["cursor"]) is not int
                or manifest["cursor"] < 0
                or not isinstance(manifest["artifacts"], dict)
                or not isinstance(manifest["identity"], dict)):
            raise ValueError("invalid manifest")
        self.object_path(manifest["continuation"])
        for digest in manifest["artifacts"].values():
            self.object_path(digest)
        return manifest
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointCorrupt(f"invalid checkpoint manifest {ref}") from exc


def _commit(self, *, identity: dict, cursor: int, continuation: str, artifacts: Dict[str, str]):
    """CheckpointStore.commit of gptqmodel 7.6.0, the layer inputs verified through
    object_path instead of get; everything it writes is the library's."""
    from gptqmodel.looper.checkpoint_store import CheckpointError, CheckpointCorrupt, _json
    self._check_owner()
    if self._identity is None:
        self.load(identity)
    if self._identity != _json(identity):
        raise CheckpointError("cannot change checkpoint identity within a run")
    if type(cursor) is not int or cursor < 0:
        raise ValueError("cursor must be a nonnegative integer")
    if cursor <= self._cursor:
        raise CheckpointError("checkpoint cursor must advance")
    manifest = {"version": self.VERSION, "identity": identity, "cursor": cursor,
                "continuation": continuation, "artifacts": artifacts}
    self.object_path(continuation)
    for digest in artifacts.values():
        self.object_path(digest)
    ref = self.put(_json(manifest))
    retained = []  # only verified generations, as upstream
    for old in self._current():
        if old == ref:
            continue
        try:
            self._manifest(old)
        except CheckpointCorrupt:
            continue
        retained.append(old)
    self._atomic_write(self.root / "CURRENT", _json(
        {"version": self.VERSION, "generations": ([ref] + retained)[: self.config.keep_last]}))
    self._cursor = cursor
    return manifest
