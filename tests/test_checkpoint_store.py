"""gptqmodel's per-layer checkpoint store with each object hashed once (qrecipe/backends/gptqmodel/
ckptstore.py): the store is driven through the calls CheckpointExtension.on_boundary makes at
each layer (put the next layer's inputs, put_file every module quantized so far, commit,
collect), with and without the patch. What the store writes is the library's, byte for byte; a
run reads no object back that it wrote itself; an object changed on disk is still refused; a
new process (a resume) hashes each object it uses once."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

pytest.importorskip("gptqmodel")

from gptqmodel.looper import checkpoint_store as cs  # noqa: E402

from qrecipe.backends.gptqmodel.ckptstore import verify_once  # noqa: E402

IDENTITY = {"model": "tiny", "layers": 6}
MODULE_BYTES = 64 * 1024
INPUT_BYTES = 256 * 1024


class _CountingHashlib:
    """checkpoint_store's hashlib, counting the bytes it reads back from disk to hash."""

    def __init__(self, real):
        self.real, self.read_back = real, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def file_digest(self, stream, name):
        self.read_back.append(os.fstat(stream.fileno()).st_size)
        return self.real.file_digest(stream, name)


@pytest.fixture
def hashes(monkeypatch):
    counting = _CountingHashlib(cs.hashlib)
    monkeypatch.setattr(cs, "hashlib", counting)
    return counting


def _blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _layer(store, offload: Path, modules: dict, k: int) -> None:
    """What on_boundary does after layer k: the next inputs, every module, commit, collect."""
    path = offload / f"layer{k}" / "module.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(_blob(k, MODULE_BYTES))
    modules[f"layer{k}"] = path
    inputs = store.put(_blob(1000 + k, INPUT_BYTES))
    refs = {name: store.put_file(p) for name, p in modules.items()}
    store.commit(identity=IDENTITY, cursor=k + 1, continuation=inputs, artifacts=refs)
    modules.update({name: store.root / "objects" / ref for name, ref in refs.items()})
    store.collect()


def _run(root: Path, layers: int, patched: bool) -> dict:
    modules: dict = {}
    with verify_once(patched) as checked:
        with cs.CheckpointStore(cs.CheckpointConfig(path=str(root / "ckpt"))) as store:
            store.load(IDENTITY)
            for k in range(layers):
                _layer(store, root / "offload", modules, k)
    return {"checked": checked, "store": root / "ckpt"}


def _files(store: Path) -> dict:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and p.name != "writer.lock"}


def test_the_store_is_the_librarys_and_nothing_written_is_read_back(tmp_path, hashes):
    upstream = _run(tmp_path / "upstream", 6, patched=False)
    upstream_read = sum(hashes.read_back)
    hashes.read_back.clear()
    mine = _run(tmp_path / "mine", 6, patched=True)
    assert _files(mine["store"]) == _files(upstream["store"])  # CURRENT, manifests, objects
    assert hashes.read_back == []
    # upstream reads every module back several times a commit: quadratic in the layers
    modules_kept = sum(k + 1 for k in range(6)) * MODULE_BYTES
    assert upstream_read > 3 * modules_kept
    assert mine["checked"].skipped_bytes > 3 * modules_kept
    assert mine["checked"].hashed_bytes == 0


@pytest.mark.parametrize("same_mtime", [True, False])
def test_an_object_changed_on_disk_is_still_refused(tmp_path, hashes, same_mtime):
    modules: dict = {}
    with verify_once(True):
        with cs.CheckpointStore(cs.CheckpointConfig(path=str(tmp_path / "ckpt"))) as store:
            store.load(IDENTITY)
            for k in range(3):
                _layer(store, tmp_path / "offload", modules, k)
            victim = modules["layer0"]
            st = victim.stat()
            victim.write_bytes(_blob(99, MODULE_BYTES))  # same size, other bytes
            if same_mtime:
                os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
            with pytest.raises(cs.CheckpointCorrupt, match="checksum mismatch"):
                _layer(store, tmp_path / "offload", modules, 3)
    assert hashes.read_back == [MODULE_BYTES]  # the changed object, hashed again


def test_a_new_process_hashes_each_object_it_uses_once(tmp_path, hashes):
    _run(tmp_path, 4, patched=True)
    assert hashes.read_back == []
    with verify_once(True) as checked:  # a resume: nothing checked yet
        with cs.CheckpointStore(cs.CheckpointConfig(path=str(tmp_path / "ckpt"))) as store:
            manifest = store.load(IDENTITY)
            assert manifest["cursor"] == 4
            store.collect()  # both kept generations: the newest one's objects not again
    # the newest generation (4 modules, its inputs), then the older one's inputs
    assert sorted(hashes.read_back) == sorted([MODULE_BYTES] * 4 + [INPUT_BYTES] * 2)
    assert checked.hashed_bytes == sum(hashes.read_back)
