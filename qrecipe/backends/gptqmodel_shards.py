"""While gptqmodel 7.6 saves a resumed run: each shard's tensors in safetensors' canonical order."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from .patching import patched


@contextmanager
def canonical_shards(enabled: bool) -> Iterator[None]:
    """While gptqmodel 7.6 saves: each shard's tensors in safetensors' canonical order (it
    writes them in registration order), so a multi-GB checkpoint is written once instead of
    being written again by the canonical rewrite. The shards and the bytes written per tensor
    are gptqmodel's own; canonicalize() checks the result. Without the private hook (another
    gptqmodel), nothing is patched and the rewrite does the work."""
    try:
        from gptqmodel.utils import model as gm
        write, dtype_name = gm._write_shard_file, gm._torch_dtype_to_safetensors
    except (ImportError, AttributeError):
        enabled = False
    if not enabled:
        yield
        return
    from ..canonical import canonical_order

    def ordered(path, entries, metadata):
        try:
            order = canonical_order({e.name: dtype_name(e.torch_dtype) for e in entries})
        except Exception:  # noqa: BLE001 - an unknown dtype: gptqmodel's order, then rewritten
            order = None
        if order is not None and len(order) == len(entries):
            by_name = {e.name: e for e in entries}
            entries = [by_name[n] for n in order]
        return write(path, entries, metadata)

    with patched({(gm, "_write_shard_file"): ordered}):
        yield
