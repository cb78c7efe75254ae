"""Wall time and peak memory of each stage of a run."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Dict

import psutil

from qrecipe.cuda import loaded as _cuda  # torch.cuda only if the job already imported torch

log = logging.getLogger(__name__)


class PeakRSS:
    """Samples this process's resident memory every `interval` s on a daemon thread.
    ru_maxrss would give the peak of the whole process lifetime, not of one stage."""

    def __init__(self, interval: float = 0.05):
        self._proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def take(self) -> int:
        """The peak since the last take (or the start), and a new window from now."""
        peak, self.peak = self.peak, self._proc.memory_info().rss
        return max(peak, self.peak)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


class Stages:
    """Times every stage; the quantize stage also records peak RSS and peak GPU memory."""

    def __init__(self) -> None:
        self.started = time.perf_counter()  # the job's wall clock (metrics.json `overhead`)
        self.seconds: Dict[str, float] = {}
        self.spans: Dict[str, float] = {}  # steps inside stages, timed by span()
        self.peak_rss: Dict[str, int] = {}
        self.peak_gpu: Dict[str, int] = {}
        self._gpu_seen = 0  # peak of the current stage before gpu_window() reset the counter
        self.current: str | None = None  # the stage running now (named when interrupted)

    @contextmanager
    def stage(self, name: str, memory: bool = False):
        log.info("== %s", name)
        self.current = name
        t0 = time.perf_counter()
        gpu = _cuda()
        if memory and gpu:
            gpu.reset_peak_memory_stats()
            self._gpu_seen = 0
        if memory:
            with PeakRSS() as peak:
                yield
            self.peak_rss[name] = peak.peak
            if gpu:
                self.peak_gpu[name] = max(self._gpu_seen, int(gpu.max_memory_allocated()))
        else:
            yield
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        log.info("   %s done in %.1fs", name, self.seconds[name])

    @contextmanager
    def span(self, name: str):
        """Seconds of one step inside a stage (summed when repeated), e.g. a hash."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.spans[name] = round(self.spans.get(name, 0.0) + time.perf_counter() - t0, 3)

    def gpu_window(self):
        """Peak GPU bytes since the last call (per-layer lines); None without CUDA. The stage's
        own peak still covers the whole stage."""
        gpu = _cuda()
        if gpu is None:
            return None
        peak = int(gpu.max_memory_allocated())
        self._gpu_seen = max(self._gpu_seen, peak)
        gpu.reset_peak_memory_stats()
        return peak
