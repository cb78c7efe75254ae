"""The libraries' output of a job goes to library.log in its run directory, not to the terminal.

gptqmodel prints banners, config dumps and per-module tables (its LogBar writes to stdout, its
logger does not propagate), tqdm draws frames on stderr, torch logs recompile warnings through
its own handler, torchao logs the .so files it cannot load, C extensions write to the file
descriptors directly: on the demo ~2,000 lines against qrecipe's ~60. For the length of a
`Capture` block:

- file descriptors 1 and 2 (so print(), sys.stdout/sys.stderr, C-level writes and child
  processes) point into a pipe; a thread reads it and writes its lines to library.log, each
  carriage-return redraw reduced to its last state, ANSI codes removed;
- another library's `logging` records go to library.log (qrecipe's own still reach the console
  and run.log: qrecipe/telemetry/terminal.py OwnLines);
- `warnings.warn` goes to library.log;
- the terminal the process had is kept aside as the active Terminal: qrecipe's log lines and
  progress bars are written there.

Each warning (a `warnings.warn`, a library record at WARNING or above, a printed "WARN"/"W1206 ..."
line) is counted; at the end one line says how many, and the distinct texts (numbers
ignored when comparing) follow, each once. library.log is opened without following a symbolic
link (qrecipe/boundary/rundir.py): a run directory may come from someone else.
"""
from __future__ import annotations

import logging
import os
import re
import select
import sys
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional

from qrecipe.boundary.rundir import open_nofollow
from qrecipe.telemetry import terminal
from qrecipe.telemetry.logs import RunLogHandler, library_line

LIBRARY_LOG = "library.log"
SHOWN = 8  # distinct warning texts listed on the terminal; the rest are in library.log
_WIDTH = 150
_PATH = re.compile(r"(?<![\w.])/(?:[^/\s:'\"`]+/)+([^/\s:'\"`]+)")
log = logging.getLogger("qrecipe")

# a printed warning: gptqmodel/LogBar "WARN  text", "WARNING: text", "UserWarning: text", or a
# glog-style line of torch's own handler ("W1206 14:04:30.050000 8983 path:123] text")
_PRINTED = re.compile(r"^\s*(?:WARN(?:ING)?\b[\s:]*|\w*Warning: )(?P<text>.+)$")
_GLOG = re.compile(r"^W\d{4} [\d:.]+\s+\d+ (?P<where>[^\]]+)\] (?P<text>.+)$")


class Warnings:
    """Counts warnings and keeps each distinct text once (digits ignored when comparing)."""

    def __init__(self) -> None:
        self.count = 0
        self.texts: "OrderedDict[str, List]" = OrderedDict()  # key -> [text, times]
        self._lock = threading.Lock()
        self._glog_where: Optional[str] = None

    def add(self, text: str) -> None:
        # a file's path is named by its last part: the line stays short enough to read
        text = " ".join(_PATH.sub(r"\1", text).split())[:_WIDTH]
        if not text:
            return
        key = re.sub(r"\d+", "#", text)
        with self._lock:
            self.count += 1
            self.texts.setdefault(key, [text, 0])[1] += 1

    def scan(self, line: str) -> None:
        """Count a printed line if it is a warning's first line."""
        g = _GLOG.match(line)
        if g:
            # torch prints one warning as several lines with the same prefix: the first counts
            if g.group("where") != self._glog_where:
                self.add(re.sub(r"^\[\d+/\d+\]\s*", "", g.group("text")))
            self._glog_where = g.group("where")
            return
        self._glog_where = None
        m = _PRINTED.match(line)
        if m:
            self.add(m.group("text"))

    def summary(self) -> List[str]:
        """The terminal's lines: the count, then each distinct text (with its count)."""
        if not self.count:
            return []
        n = len(self.texts)
        lines = [f"{self.count} library warning{'s' if self.count > 1 else ''}"
                 f"{f', {n} distinct' if n != self.count else ''} (see {LIBRARY_LOG}):"]
        for text, times in list(self.texts.values())[:SHOWN]:
            lines.append(f"  {text}" + (f" (x{times})" if times > 1 else ""))
        if n > SHOWN:
            lines.append(f"  ... and {n - SHOWN} more in {LIBRARY_LOG}")
        return lines


class _Sink:
    """library.log: lines from the pipe reader, the logging handler and warnings, one lock."""

    def __init__(self, fd: int):
        self.fd = fd
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        data = (text if text.endswith("\n") else text + "\n").encode("utf-8", "replace")
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]


class _LibraryHandler(logging.Handler):
    """Another library's records (qrecipe's own are the console's and run.log's)."""

    def __init__(self, sink: _Sink, seen: Warnings):
        super().__init__(logging.DEBUG)
        self.sink, self.seen = sink, seen
        self.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if terminal.own(record):
            return
        try:
            self.sink.write(self.format(record))
            if record.levelno >= logging.WARNING:
                self.seen.add(record.getMessage().splitlines()[0] if record.msg else "")
        except Exception:  # never let a library's bad record stop the job
            pass


class Capture:
    """library.log for the length of the block (see the module's docstring). `warnings` holds
    what was counted; the summary is logged when the block ends."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.warnings = Warnings()
        self._saved: dict = {}

    def __enter__(self) -> "Capture":
        fd = open_nofollow(self.out, self.out / LIBRARY_LOG,
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.sink = _Sink(fd)
        _flush()
        self._saved = {n: os.dup(n) for n in (1, 2)}
        self._term_file = os.fdopen(os.dup(self._saved[2]), "w", buffering=1,
                                    encoding="utf-8", errors="replace")
        self._term = terminal.using(terminal.Terminal(self._term_file))
        self._term.__enter__()
        read, write = os.pipe()
        for n in (1, 2):
            os.dup2(write, n)
        os.close(write)
        # sys.stdout/sys.stderr onto the pipe too, whatever objects they were (a harness may
        # have replaced them with ones that do not write to the descriptors)
        self._sys = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = (open(n, "w", buffering=1, encoding="utf-8", errors="replace",
                                       closefd=False) for n in (1, 2))
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._pump, args=(read,), daemon=True,
                                        name="qrecipe-library-log")
        self._reader.start()
        self._handler = _LibraryHandler(self.sink, self.warnings)
        self._moved = _keep_console(terminal.active())
        logging.getLogger().addHandler(self._handler)
        self._showwarning, warnings.showwarning = warnings.showwarning, self._warning
        return self

    def __exit__(self, *exc) -> None:
        warnings.showwarning = self._showwarning
        logging.getLogger().removeHandler(self._handler)
        _restore_console(self._moved)
        _flush()
        for ours in (sys.stdout, sys.stderr):
            ours.close()  # closefd=False: the descriptors stay
        sys.stdout, sys.stderr = self._sys
        _flush()
        for n, fd in self._saved.items():
            os.dup2(fd, n)
            os.close(fd)
        self._stop.set()
        self._reader.join(timeout=10)
        self._term.__exit__(*exc)
        self._term_file.close()
        os.close(self.sink.fd)
        for line in self.warnings.summary():
            log.warning("%s", line)

    def _warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self.sink.write(warnings.formatwarning(message, category, filename, lineno, line))
        self.warnings.add(f"{category.__name__}: {message}")

    def _pump(self, fd: int) -> None:
        """Lines from the pipe into library.log until the block ends and the pipe is drained
        (a child process that still holds it open is not waited for)."""
        os.set_blocking(fd, False)
        pending = ""
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 0.2)
                chunk = b""
                if ready:
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        break  # every writer closed it
                elif self._stop.is_set():
                    break
                pending += chunk.decode("utf-8", "replace")
                *lines, pending = pending.split("\n")
                self._lines(lines)
            self._lines([pending])
        except Exception:  # the reader never writes to the stream it reads (no deadlock)
            pass
        finally:
            os.close(fd)

    def _lines(self, lines: List[str]) -> None:
        for raw in lines:
            line = library_line(raw)
            if line is not None:
                self.sink.write(line)
                self.warnings.scan(line)


_OWN = terminal.OwnLines()


def _keep_console(term: terminal.Terminal) -> list:
    """Log handlers set up without qrecipe's console (a plain StreamHandler on stderr, as an
    in-process caller may add, and run.log's handler): for the capture, the stream ones write to
    the terminal kept aside (not into the pipe), and both keep qrecipe's records only. Returns
    what to undo."""
    moved = []
    for h in logging.getLogger().handlers:
        if isinstance(h, terminal.ConsoleHandler) or any(isinstance(f, terminal.OwnLines)
                                                         for f in h.filters):
            continue
        if isinstance(h, RunLogHandler):
            moved.append((h, None))
        elif type(h) is logging.StreamHandler and _fileno(h.stream) in (1, 2):
            moved.append((h, h.setStream(term)))
        else:
            continue
        h.addFilter(_OWN)
    return moved


def _restore_console(moved: list) -> None:
    for h, stream in moved:
        h.removeFilter(_OWN)
        if stream is not None:
            h.setStream(stream)


def _fileno(stream) -> Optional[int]:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, OSError):
        return None


def _flush() -> None:
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except (AttributeError, ValueError, OSError):
            pass
