"""One log line per decoder layer while a backend quantizes: index, seconds, peak memory.

The adapters are not touched: for the length of the quantize stage `layer_log` hooks the
backend library's own per-layer events (as soon as the adapter has imported the library) and
restores them afterwards.
- gptqmodel GPTQ/AWQ (ModuleLooper): the looper's `subset_callback` ("forward_start": the first
  layer begins) and `layer_callback` (`layer_complete`: a layer is quantized), which it looks up
  on the model; set here on the model class.
- gptqmodel RTN (WeightOnlyLooper): it announces its plan to `LoopExtensions.start` and publishes
  every finished layer to `LoopExtensions.publish`.
- llm-compressor (sequential pipeline): `LifecycleCallbacks.calibration_start` and
  `sequential_epoch_end` (its modifiers quantize a subgraph's modules on that event).
A library version without these hooks only loses the per-layer lines, never the run. The rows
also go to metrics.json ("per_layer").
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional

from qrecipe.telemetry.monitor import PeakRSS

log = logging.getLogger("qrecipe.layers")
_GB = 1 << 30


class LayerLog:
    """Receives layer events from any thread; logs each finished layer once."""

    def __init__(self, total: int, gpu_window: Optional[Callable[[], Optional[int]]] = None):
        self.total = total
        self.rows: List[Dict[str, Any]] = []
        self._gpu_window = gpu_window or (lambda: None)
        self._lock = threading.Lock()
        self._done: set = set()
        self._last = time.perf_counter()
        self._rss: Optional[PeakRSS] = None

    def __enter__(self) -> "LayerLog":
        self._rss = PeakRSS().__enter__()
        self._last = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self._rss is not None:
            self._rss.__exit__(*exc)

    def first_layer_starts(self) -> None:
        """Loading and input capture before the first layer are not the first layer's time;
        each later layer runs from the end of the previous one (so the rows add up)."""
        with self._lock:
            if self._done:
                return
            self._last = time.perf_counter()
            if self._rss is not None:
                self._rss.take()
            self._gpu_window()

    def is_done(self, index: Any) -> bool:
        with self._lock:
            return index in self._done

    def done(self, index: Any, name: Optional[str] = None) -> None:
        with self._lock:
            if index in self._done:
                return
            self._done.add(index)
            now = time.perf_counter()
            seconds = now - self._last
            self._last = now
            rss = self._rss.take() if self._rss is not None else None
            gpu = self._gpu_window()
            row = {"layer": index, "name": name, "seconds": round(seconds, 3),
                   "peak_rss_bytes": rss, "peak_gpu_bytes": gpu}
            self.rows.append(row)
        log.info("%s", format_row(row, self.total))


def format_row(row: Dict[str, Any], total: int) -> str:
    i = row["layer"]
    text = f"layer {i} ({i + 1}/{total})" if isinstance(i, int) else f"layers {i} (of {total})"
    if row.get("name"):
        text += f" {row['name']}"
    text += f": {row['seconds']:.1f}s"
    if row.get("peak_rss_bytes"):
        text += f", peak RSS {row['peak_rss_bytes'] / _GB:.2f} GB"
    if row.get("peak_gpu_bytes") is not None:
        text += f", peak GPU {row['peak_gpu_bytes'] / _GB:.2f} GB"
    return text


@contextmanager
def _patched(owner: Any, attr: str, value: Any) -> Iterator[None]:
    missing = object()
    old = owner.__dict__.get(attr, missing)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        if old is missing:
            delattr(owner, attr)
        else:
            setattr(owner, attr, old)


class _GPTQModelEvents:
    """The looper's callback protocol (`layer_complete`, `subset_event`)."""

    def __init__(self, layers: LayerLog):
        self.layers = layers
        self.names: Dict[int, str] = {}  # from the looper's plan (LoopExtensions.start)

    def layer_complete(self, layer_idx: int, submodule_finalized: bool) -> None:
        # Emitted twice per layer when packing runs after it (False, then True from a worker):
        # the first one ends the layer's own work.
        self.layers.done(layer_idx, self.names.get(layer_idx))

    def subset_event(self, stage: str, layer_idx: int, subset_index: int, **_: Any) -> None:
        if stage == "forward_start" and subset_index == 0:
            self.layers.first_layer_starts()


def _gptqmodel(stack: ExitStack, layers: LayerLog) -> None:
    from gptqmodel.looper.extension import LoopExtensions
    from gptqmodel.models.base import BaseQModel

    events = _GPTQModelEvents(layers)
    stack.enter_context(_patched(BaseQModel, "layer_callback", events))
    stack.enter_context(_patched(BaseQModel, "subset_callback", events))
    publish = LoopExtensions.publish

    def observed(self, step, futures=()):
        if getattr(step, "kind", None) == "layer":
            layers.done(step.index, step.name)
        return publish(self, step, futures)

    stack.enter_context(_patched(LoopExtensions, "publish", observed))
    begin = LoopExtensions.start

    def started(self, context):
        events.names = {st.index: st.name for st in context.plan.steps if st.kind == "layer"}
        layers.first_layer_starts()
        return begin(self, context)

    stack.enter_context(_patched(LoopExtensions, "start", started))


def _llmcompressor(stack: ExitStack, layers: LayerLog) -> None:
    from llmcompressor.core import LifecycleCallbacks

    epoch_end = LifecycleCallbacks.sequential_epoch_end.__func__
    calib_start = LifecycleCallbacks.calibration_start.__func__
    seen = [0]

    def calibration_start(cls, **kwargs):
        seen[0] = 0  # each pipeline pass (AWQ runs a second one) starts at layer 0
        layers.first_layer_starts()
        return calib_start(cls, **kwargs)

    def sequential_epoch_end(cls, modules, **kwargs):
        result = epoch_end(cls, modules, **kwargs)
        blocks = _decoder_layers(modules)
        if blocks:  # the last subgraph (final norm, lm_head) holds no decoder layer
            first, seen[0] = seen[0], seen[0] + len(blocks)
            if len(blocks) == 1:
                layers.done(first, blocks[0])
            elif not all(layers.is_done(i) for i in range(first, seen[0])):
                layers.done(f"{first}-{seen[0] - 1}")
        return result

    stack.enter_context(_patched(LifecycleCallbacks, "calibration_start",
                                 classmethod(calibration_start)))
    stack.enter_context(_patched(LifecycleCallbacks, "sequential_epoch_end",
                                 classmethod(sequential_epoch_end)))


def _decoder_layers(modules) -> List[str]:
    """Names of the decoder layers (the model's no-split module classes) among `modules`."""
    from llmcompressor.core import active_session

    model = getattr(active_session().state, "model", None)
    classes = set(getattr(model, "_no_split_modules", None) or ())
    ids = {id(m) for m in modules if type(m).__name__ in classes}
    if not ids:
        return []
    return [n for n, m in model.named_modules() if id(m) in ids]


# backend name -> (the library's top-level package, the probe that hooks it)
_PROBES = {"gptqmodel": ("gptqmodel", _gptqmodel),
           "llmcompressor": ("llmcompressor", _llmcompressor)}


@contextmanager
def layer_log(backend: str, total: int,
              gpu_window: Optional[Callable[[], Optional[int]]] = None) -> Iterator[LayerLog]:
    """Per-layer lines for `backend` during the block (no-op for a backend without layers)."""
    with ExitStack() as stack:
        layers = stack.enter_context(LayerLog(total, gpu_window))
        if backend in _PROBES:
            package, probe = _PROBES[backend]

            def install() -> None:
                try:
                    probe(stack, layers)
                except (ImportError, AttributeError) as e:  # another version: no lines
                    log.info("no per-layer progress for %s (%s)", backend, e)

            stack.callback(_when_imported(package, install))
        yield layers


def _when_imported(package: str, install: Callable[[], None]) -> Callable[[], None]:
    """install() now if `package` is imported, else right after the adapter imports it (never
    importing it early: adapters set environment the library reads at import). Returns the
    function that removes the pending hook."""
    if package in sys.modules:
        install()
        return lambda: None

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != package:
                return None
            # Availability checks (importlib.util.find_spec) come here too without importing:
            # the hook stays until the module is really executed.
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(fullname)
            finally:
                sys.meta_path.insert(0, self)
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def exec_then_install(module):
                    remove()
                    exec_module(module)
                    install()

                spec.loader.exec_module = exec_then_install
            return spec

    finder = Finder()

    def remove() -> None:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)

    sys.meta_path.insert(0, finder)
    return remove
