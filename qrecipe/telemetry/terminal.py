"""The terminal of a run: qrecipe's own lines and one progress bar per stage, nothing else.

While a job runs, the libraries' output goes to library.log (qrecipe/telemetry/capture.py moves
the process's stdout and stderr there); the terminal it had is kept as the `active` Terminal,
which the console log handler (`ConsoleHandler`, wired in conf/hydra/job_logging/qrecipe.yaml)
and the progress bars write to. A bar is drawn only where that stream is a terminal (isatty): a
pipe or a file gets the log lines and no frames at all. A log line clears the bar, is written,
and the bar is drawn again below it.

`OwnLines` is the filter of both the console and run.log: qrecipe's loggers always pass; another
library's records pass only outside a capture, and only from WARNING up (inside one they go to
library.log, counted when they are warnings).
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, List, Optional, TextIO

_CLEAR = "\r\x1b[K"  # back to the line's start, erase to its end
_WIDTH = 24  # the bar's cells


class Terminal:
    """One output stream (default: sys.stderr as it is when written to) and its current bar."""

    def __init__(self, stream: Optional[TextIO] = None):
        self._stream = stream
        self.lock = threading.RLock()
        self.bar: Optional["Bar"] = None
        self._drawn = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def isatty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def line(self, text: str) -> None:
        """One finished line (a log record), below which the bar is drawn again."""
        with self.lock:
            s = self.stream
            if self._drawn:
                s.write(_CLEAR)
                self._drawn = False
            s.write(text + "\n")
            if self.bar is not None:
                self._draw_locked(self.bar.render())
            s.flush()

    def draw(self, text: str) -> None:
        """Redraw the bar's line (nothing where the stream is not a terminal)."""
        with self.lock:
            self._draw_locked(text)
            self.stream.flush()

    def _draw_locked(self, text: str) -> None:
        if self.isatty():
            self.stream.write(_CLEAR + text)
            self._drawn = True

    def write(self, text: str) -> None:
        """A stream's write(), for a log handler that holds this terminal as its stream: the bar
        is cleared first and drawn again after a finished line."""
        with self.lock:
            if self._drawn:
                self.stream.write(_CLEAR)
                self._drawn = False
            self.stream.write(text)
            if text.endswith("\n") and self.bar is not None:
                self._draw_locked(self.bar.render())

    def flush(self) -> None:
        self.stream.flush()

    def clear(self) -> None:
        with self.lock:
            if self._drawn:
                self.stream.write(_CLEAR)
                self.stream.flush()
                self._drawn = False


_STACK: List[Terminal] = []
_DEFAULT = Terminal()


def active() -> Optional[Terminal]:
    """The terminal a capture kept aside (None outside a capture)."""
    return _STACK[-1] if _STACK else None


def current() -> Terminal:
    return active() or _DEFAULT


@contextmanager
def using(term: Terminal) -> Iterator[Terminal]:
    _STACK.append(term)
    try:
        yield term
    finally:
        term.clear()
        _STACK.remove(term)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


class Bar:
    """`label [#####.......] done/total unit, elapsed, ETA` for one stage; redrawn at most every
    `every` seconds (and at the last step)."""

    def __init__(self, term: Terminal, label: str, total: int, unit: str, every: float = 0.5):
        self.term, self.label, self.total, self.unit = term, label, max(1, int(total)), unit
        self.done, self.every = 0, every
        self.t0 = time.perf_counter()
        self._last = 0.0

    def render(self) -> str:
        frac = min(1.0, self.done / self.total)
        cells = int(frac * _WIDTH)
        elapsed = time.perf_counter() - self.t0
        text = (f"{self.label} [{'#' * cells}{'.' * (_WIDTH - cells)}] {self.done}/{self.total} "
                f"{self.unit}, {_clock(elapsed)}")
        if 0 < self.done < self.total:
            text += f", ETA {_clock(elapsed / self.done * (self.total - self.done))}"
        return text

    def update(self, done: int) -> None:
        self.done = done
        now = time.perf_counter()
        if now - self._last >= self.every or done >= self.total:
            self._last = now
            self.term.draw(self.render())


@contextmanager
def progress(label: str, total: int, unit: str) -> Iterator[Bar]:
    """A bar for the length of the block (one at a time: a nested one replaces it)."""
    term = current()
    bar = Bar(term, label, total, unit)
    with term.lock:
        before, term.bar = term.bar, bar
    bar.update(0)
    try:
        yield bar
    finally:
        with term.lock:
            term.bar = before
            term.clear()


def own(record: logging.LogRecord) -> bool:
    return record.name == "qrecipe" or record.name.startswith("qrecipe.")


class OwnLines(logging.Filter):
    """qrecipe's records; another library's only outside a capture and from WARNING up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return own(record) or (active() is None and record.levelno >= logging.WARNING)


class ConsoleHandler(logging.StreamHandler):
    """The console of a run: while a capture is active its lines go to the terminal the capture
    kept aside (with the bar redrawn below them); otherwise to its own stream."""

    def emit(self, record: logging.LogRecord) -> None:
        term = active()
        if term is None:
            super().emit(record)
            return
        try:
            term.line(self.format(record))
        except Exception:
            self.handleError(record)
