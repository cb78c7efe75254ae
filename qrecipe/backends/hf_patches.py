"""Every transformers function qrecipe replaces, in one place: owner, name and the sha256 of the
upstream source at the pinned 5.17 (tests/test_patches.py checks the installed library still has
it), with the replacement.

One: the safetensors writer `save_pretrained` calls for each shard
(`transformers.modeling_utils.safe_save_file`), wrapped so that a follower thread hashes each
shard right behind the write (record/filehash.WriteHashes). The save stage then finds every
shard's sha256 in the file-hash memo instead of reading a multi-GB file again after the write:
the backends that save through transformers (llm-compressor, hqq, bitsandbytes) get what
gptqmodel's shard writer has (backends/gptqmodel/shards.py). The bytes written are transformers'
own; on another transformers nothing is patched (one warning line) and the save stage reads the
files after the write, as before.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator

from qrecipe.backends.base import TRANSFORMERS
from qrecipe.backends.patching import Patch, PatchSet, guarded
from qrecipe.record import filehash

SHARD_WRITES = PatchSet(
    TRANSFORMERS, "hashing each shard while save_pretrained writes it",
    "the save stage reads every shard again after the write",
    (Patch("transformers.modeling_utils", "safe_save_file", "650f051ef93f92db"),))

ALL = (SHARD_WRITES,)


@contextmanager
def hashed_shards() -> Iterator[filehash.WriteHashes]:
    """While the block runs, every shard save_pretrained writes is hashed as it is written;
    the caller joins the followers (wait()) after the save and times that as its own work."""
    hashes = filehash.WriteHashes()

    def build(original):
        (key, write), = original.items()

        def hooked(tensors, filename, metadata=None):
            return hashes.around(filename, lambda: write(tensors, filename, metadata=metadata))
        return {key: hooked}

    with guarded(SHARD_WRITES, build):
        yield hashes


def save_hashed(save: Callable[[], object]) -> Dict[str, float]:
    """save() (a save_pretrained call) with its shards hashed as they are written: {"save":
    seconds of the library's write, "shard_sha256_wait": seconds of hashing left after it
    (qrecipe's own: metrics.json overhead)}."""
    t0 = time.perf_counter()
    with hashed_shards() as hashes:
        save()
    t1 = time.perf_counter()
    hashes.wait()
    return {"save": t1 - t0, "shard_sha256_wait": time.perf_counter() - t1}
