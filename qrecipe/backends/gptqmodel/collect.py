"""Garbage collection around gptqmodel 7.6's quantize(): free what its per-layer checkpoint
leaves behind after every commit, and keep every full collection cheap (frozen_heap).

Why: each commit serializes the next layer's inputs with ``ContinuationCodec.dumps``
(gptqmodel/looper/continuation.py), which clones every tensor to CPU into a local dict
(line 34) that its nested recursive function ``encode`` (line 22) closes over. A recursive
closure is a reference cycle (encode -> its cell -> encode), so the clones outlive the call until
Python's cyclic collector happens to reach them: on the 13B-on-T4 recipe host RAM rose by one
layer's calibration inputs (2.5 GiB) per layer. Measured on CPU (docs/benchmarks.md, "Host RAM
per layer"): the held CPU tensors grew by one set of layer inputs per commit without this, and
stayed flat with it.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional

from qrecipe.backends.gptqmodel.patches import CHECKPOINT_GC
from qrecipe.backends.patching import guarded
from qrecipe.heap import release_free_memory


@dataclass
class CheckpointSeconds:
    """Seconds of gptqmodel's checkpoint calls (on_start, then on_boundary after each layer:
    capture, write, commit) and of the collection after each (metrics.json, quantize_details)."""
    calls: List[float] = field(default_factory=list)
    collections: List[float] = field(default_factory=list)


@contextmanager
def collect_after_checkpoints(on_commit: Optional[Callable[[], None]] = None
                              ) -> Iterator[CheckpointSeconds]:
    """While active, run a full garbage collection after the checkpoint's start (its identity
    hashes the calibration inputs with the same codec: one more copy, alive through layer 0)
    and after every boundary (the commit of a finished layer), then call `on_commit` (the
    runner seals the commit before the next layer starts). Yields the seconds of each call and
    collection (and trim). Another gptqmodel is left as it is (backends/patching.py)."""
    seconds = CheckpointSeconds()
    with guarded(CHECKPOINT_GC, lambda original: {k: _collecting(fn, seconds, on_commit)
                                                   for k, fn in original.items()}):
        yield seconds


def _collecting(method: Callable, seconds: CheckpointSeconds,
                on_commit: Optional[Callable[[], None]]) -> Callable:
    def wrapper(self, *args):
        t0 = time.perf_counter()
        try:
            return method(self, *args)
        finally:  # also after CheckpointStopped: the copies are garbage, the commit is made
            t1 = time.perf_counter()
            # collected, and whole free pages back to the OS: with gc alone the RSS still rose
            # ~20 MiB a layer on CPU, ~4 with the trim
            release_free_memory(collect=True)
            t2 = time.perf_counter()
            seconds.calls.append(t1 - t0)
            seconds.collections.append(t2 - t1)
            if on_commit is not None:
                on_commit()
    return wrapper


@contextmanager
def frozen_heap() -> Iterator[None]:
    """gc.freeze() for one quantize() call. The objects alive when it starts (torch's,
    transformers' and gptqmodel's modules, the tokenizer, the rows: ~650k objects) move to the
    permanent generation, so each full collection inside the call scans only what the call
    created: the one after every checkpoint commit above, gptqmodel's own
    torch_empty_cache(gc=True), the adapter's last one, and Python's automatic passes. Measured
    on CPU (docs/benchmarks.md, "Full collections inside gptqmodel's quantize()"): 0.41 s -> 0.01 s a collection. Objects
    frozen here are never collected while frozen, so the call ends with gc.unfreeze(): garbage
    among them is collected later, as without this."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
