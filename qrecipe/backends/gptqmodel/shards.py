"""While gptqmodel 7.6 saves: each shard hashed as it is written, and (a resumed run) its tensors
in safetensors' canonical order."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from qrecipe.backends.gptqmodel.patches import SHARD_WRITES
from qrecipe.backends.patching import guarded
from qrecipe.record import filehash
from qrecipe.record.canonical import canonical_order


@contextmanager
def shard_writes(canonical: bool) -> Iterator[filehash.WriteHashes]:
    """While gptqmodel 7.6 saves, through its private shard writer:
    - every shard is hashed while gptqmodel writes it (filehash.Follower, one thread per shard,
      right behind the writer), so the save stage finds its sha256 in the file-hash memo
      instead of reading a multi-GB file again after the write;
    - canonical: the tensors in safetensors' canonical order (gptqmodel writes them in
      registration order), so a resumed run's shards are written once instead of being written
      again by the canonical rewrite; canonicalize() checks the result. The order is set
      before gptqmodel splits the tensors into shards, so a resumed run's files hold the same
      tensors as the uninterrupted run's (canonicalize() reorders within a file, not across).
    The shards and the bytes written per tensor are gptqmodel's own. On another gptqmodel
    nothing is patched (one warning line): the save stage reads the files, the rewrite
    reorders them."""
    hashes = filehash.WriteHashes()
    with guarded(SHARD_WRITES, lambda original: _hooks(original, canonical, hashes)):
        yield hashes


def _hooks(original, canonical: bool, hashes: filehash.WriteHashes):
    from gptqmodel.utils import model as gm
    write, plan = original["model._write_shard_file"], original["model._plan_shards"]
    dtype_name = getattr(gm, "_torch_dtype_to_safetensors", None)  # None: gptqmodel's order

    def hooked(path, entries, metadata):
        if canonical:
            entries = _ordered(entries, dtype_name)
        return hashes.around(path, lambda: write(path, entries, metadata))

    def planned(entries, max_shard_size):
        return plan(_ordered(entries, dtype_name) if canonical else entries, max_shard_size)

    return {"model._write_shard_file": hooked, "model._plan_shards": planned}


def _ordered(entries, dtype_name):
    if dtype_name is None:
        return entries
    try:
        order = canonical_order({e.name: dtype_name(e.torch_dtype) for e in entries})
    except Exception:  # noqa: BLE001 - an unknown dtype: gptqmodel's order, then rewritten
        order = None
    if order is not None and len(order) == len(entries):
        by_name = {e.name: e for e in entries}
        entries = [by_name[n] for n in order]
    return entries
