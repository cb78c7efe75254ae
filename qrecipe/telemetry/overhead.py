"""qrecipe's own overhead: how much of a job's wall time is not the quantization library's.

metrics.json `overhead` splits the job's wall time (`wall_s`: from the validate stage to
metrics.json; the manifest, written after it, is outside) into
- `imports_s`: torch and transformers, imported by qrecipe before the backend runs, and on a
  GPU the start of the CUDA context (CUDA_START): a script calling the library directly pays
  them too;
- `backend_s`: the library's own seconds as its adapter timed them (quantize_details.seconds:
  import, load, quantize, save), counted only when the quantize stage ran in this attempt;
- `evaluate_s`: the evaluate stage (forward passes of the library's model, the fp baseline);
- `qrecipe_own_s`: the rest, i.e. what qrecipe adds: validation, the hashing that was waited
  for, tokenizing, the canonical rewrite of the weights, the run directory's records.
`uncached_bytecode` names the timed imports that found no bytecode cache (`.pyc`) and could not
write one (PYTHONDONTWRITEBYTECODE, a read-only install): every job compiles them again, which
made torch + transformers + a backend 2.7x slower to import on CPU-A (benchmarks/import_time.py,
docs/benchmarks.md "Imports with and without bytecode caches").
`hashing_s` details the part that grows with the model: the input's sha256 runs on a background
thread (`input`: how long it ran, `input_waited`: how long the job waited for it) and the output
shards are hashed side by side (`output`; near 0 when the adapter hashed them while the library
wrote them); `qrecipe_s` holds an adapter's own steps (the wait for that hashing after the write,
the canonical rewrite); `recast_s` the rewrite of the unquantized tensors into the recipe's dtype
where the job computed in another (qrecipe/record/recast.py).
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Dict, List, Tuple

_IMPORTS: List[Tuple[float, str, float]] = []  # (started, module, seconds), this process


@contextmanager
def timed_import(name: str):
    """Time the block that first imports `name` (nothing is recorded if it was imported)."""
    fresh = name not in sys.modules
    t0 = time.perf_counter()
    yield
    if fresh:
        _IMPORTS.append((t0, name, time.perf_counter() - t0))


CUDA_START = "cuda context"  # imports_s's name for the CUDA context's start (no module's name)


@contextmanager
def timed_cuda_start():
    """Time the block that starts this process's CUDA context (torch imported), as imports_s
    [CUDA_START]: a script calling the library starts it too, before its first CUDA tensor.
    Nothing is recorded where CUDA had started already."""
    import torch  # deferred: only a CUDA job's validation calls this, torch imported by then
    fresh = not torch.cuda.is_initialized()
    t0 = time.perf_counter()
    yield
    if fresh:
        _IMPORTS.append((t0, CUDA_START, time.perf_counter() - t0))


def bytecode_cached(name: str):
    """Whether imported module `name` has its bytecode cache on disk now (read, or written by
    this import); None where it is not imported or has none to have (a builtin, a namespace)."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    cached = getattr(spec, "cached", None)
    return os.path.exists(cached) if cached else None


def breakdown(stages, details: Dict[str, Any], reused: List[str], input_hash) -> Dict[str, Any]:
    """The `overhead` block of metrics.json (see the module's docstring)."""
    wall = time.perf_counter() - stages.started
    imports = {name: round(s, 3) for t0, name, s in _IMPORTS if t0 >= stages.started}
    backend = {} if "quantize" in reused else dict(details.get("seconds") or {})
    evaluate = 0.0 if "evaluate" in reused else stages.seconds.get("evaluate", 0.0)
    own = wall - sum(imports.values()) - sum(backend.values()) - evaluate
    return {
        "wall_s": round(wall, 3), "imports_s": imports, "backend_s": backend,
        "evaluate_s": evaluate, "qrecipe_own_s": round(own, 3),
        "qrecipe_own_share": round(own / wall, 4) if wall > 0 else None,
        "hashing_s": {"input": input_hash.seconds, "input_waited": input_hash.waited,
                      **{k[5:]: v for k, v in stages.spans.items() if k.startswith("hash_")}},
        "qrecipe_s": {} if "quantize" in reused else dict(details.get("qrecipe_seconds") or {}),
        "uncached_bytecode": [n for n in imports if bytecode_cached(n) is False],
        **({"recast_s": stages.spans["recast"]} if "recast" in stages.spans else {}),
    }
