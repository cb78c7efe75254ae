"""One log line per decoder layer while a backend quantizes: index, seconds, peak memory.

The adapters are not touched: for the length of the quantize stage `layer_log` runs the hook a
backend registered (`register`, from backends/<library>/layerhooks.py), as soon as the adapter
has imported the library; the hook feeds the library's own per-layer events to a `LayerLog`,
which logs each finished layer once and moves the stage's progress bar (on a terminal:
qrecipe/telemetry/terminal.py). This module knows no library. The rows also go to metrics.json
("per_layer").
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from qrecipe.telemetry.monitor import PeakRSS
from qrecipe.telemetry.terminal import Bar, progress

log = logging.getLogger("qrecipe.layers")
_GB = 1 << 30


class LayerLog:
    """Receives layer events from any thread; logs each finished layer once."""

    def __init__(self, total: int, gpu_window: Optional[Callable[[], Optional[int]]] = None,
                 bar: Optional[Bar] = None):
        self.total, self.bar = total, bar
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
            finished = len(self._done)
        log.info("%s", format_row(row, self.total))
        if self.bar is not None:
            self.bar.update(finished)


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


# backend name -> (the library's top-level package, the hook that feeds its events to a
# LayerLog for the length of an ExitStack)
_PROBES: Dict[str, Tuple[str, Callable[[ExitStack, LayerLog], None]]] = {}


def register(backend: str, package: str, install: Callable[[ExitStack, LayerLog], None]) -> None:
    """`install(stack, layers)` runs once `package` is imported during a `layer_log(backend)`
    block; what it patches it leaves on `stack`, which restores it when the block ends."""
    _PROBES[backend] = (package, install)


@contextmanager
def layer_log(backend: str, total: int,
              gpu_window: Optional[Callable[[], Optional[int]]] = None) -> Iterator[LayerLog]:
    """Per-layer lines for `backend` during the block (no-op for a backend without layers)."""
    with ExitStack() as stack:
        bar = stack.enter_context(progress("quantize", total, "layers")) \
            if backend in _PROBES else None
        layers = stack.enter_context(LayerLog(total, gpu_window, bar))
        if backend in _PROBES:
            package, probe = _PROBES[backend]

            def install() -> None:
                try:
                    probe(stack, layers)
                except (ImportError, AttributeError) as e:  # the run goes on without lines
                    log.warning("no per-layer progress for %s (%s)", backend, e)

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
