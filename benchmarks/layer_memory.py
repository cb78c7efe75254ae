"""Host memory at every quantized layer of a qrecipe run: RSS, and the bytes of CPU tensors the
Python heap still holds (reachable or waiting for the cyclic collector), which tells a reference
kept alive from allocator retention. Used for the per-layer RSS growth of the 13B-on-T4 recipe
(docs/benchmarks.md, "Host RAM per layer").

    python benchmarks/layer_memory.py [--without-gc-fix] QRECIPE_OVERRIDES...

--without-gc-fix runs the gptqmodel adapter without qrecipe/backends/gptqmodel/collect.py (the
behaviour before the fix). Lines go to stderr, prefixed "MEM".
"""
from __future__ import annotations

import contextlib
import gc
import os
import runpy
import sys


def cpu_tensor_bytes() -> int:
    """Unique CPU storages among the tensors the gc knows (does not collect anything)."""
    import torch

    seen = {}
    for o in gc.get_objects():
        if isinstance(o, torch.Tensor) and o.device.type == "cpu":
            try:
                s = o.untyped_storage()
            except (RuntimeError, NotImplementedError):  # sparse and other storage-less kinds
                continue
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def main() -> None:
    import psutil

    import qrecipe.telemetry.layerlog as layerlog

    args = sys.argv[1:]
    if "--without-gc-fix" in args:
        args.remove("--without-gc-fix")
        import qrecipe.backends.gptqmodel.adapter as adapter
        from qrecipe.backends.gptqmodel.collect import CheckpointSeconds
        adapter.collect_after_checkpoints = lambda *a: contextlib.nullcontext(CheckpointSeconds())

    proc = psutil.Process()
    done = layerlog.LayerLog.done
    # the terminal's stderr: while a stage runs, qrecipe points descriptor 2 at library.log
    err = os.fdopen(os.dup(2), "w", buffering=1)

    def report(self, index, name=None):
        first = index not in self._done
        done(self, index, name)
        if first:  # the looper reports some layers twice
            print(f"MEM layer {index}: rss {proc.memory_info().rss / 2**20:.0f} MiB, "
                  f"live CPU tensors {cpu_tensor_bytes() / 2**20:.0f} MiB",
                  file=err, flush=True)

    layerlog.LayerLog.done = report
    sys.argv = ["qrecipe", *args]
    runpy.run_module("qrecipe", run_name="__main__")


if __name__ == "__main__":
    main()
