"""The libraries' output of a job goes to library.log in its run directory, not to the terminal.

gptqmodel prints banners, config dumps and per-module tables (its LogBar writes to stdout, its
logger does not propagate), tqdm draws frames on stderr, torch logs recompile warnings through
its own handler, torchao logs the .so files it cannot load, C extensions write to the file
descriptors directly: on the demo ~2,000 lines against qrecipe's ~60. For the length of a
`Capture` block:

- file descriptors 1 and 2 (so print(), sys.stdout/sys.stderr, C-level writes and child
  processes) point to library.log; when the block ends its new part is rewritten as lines a
  person reads: each carriage-return redraw reduced to its last state, progress-bar frames and
  ANSI codes removed (a file, not a pipe: a compile worker started inside the block that writes
  after it still has somewhere to write);
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
import sys
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional

from qrecipe.boundary.rundir import open_nofollow, write_bytes_nofollow
from qrecipe.telemetry import terminal
from qrecipe.telemetry.logs import RunLogHandler, library_line

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

    def __init__(self, where: str) -> None:
        self.where = where  # the file the summary points to
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
                 f"{f', {n} distinct' if n != self.count else ''} (see {self.where}):"]
        for text, times in list(self.texts.values())[:SHOWN]:
            lines.append(f"  {text}" + (f" (x{times})" if times > 1 else ""))
        if n > SHOWN:
            lines.append(f"  ... and {n - SHOWN} more in {self.where}")
        return lines


class _Sink:
    """The libraries' log as the logging handler and warnings write to it (one lock; the
    descriptors 1 and 2 point to the same file, opened for appending)."""

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
    """The libraries' log `name` in run directory `out` for the length of the block (see the
    module's docstring; the runner names it: record/outputs.py LIBRARY_LOG). `warnings` holds
    what was counted; the summary is logged when the block ends."""

    def __init__(self, out: Path, name: str):
        self.out = Path(out)
        self.path = self.out / name
        self.warnings = Warnings(name)

    def __enter__(self) -> "Capture":
        fd = open_nofollow(self.out, self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.sink, self._start = _Sink(fd), os.fstat(fd).st_size  # a resumed run appends
        _flush()
        self._saved = {n: os.dup(n) for n in (1, 2)}
        self._term_file = os.fdopen(os.dup(self._saved[2]), "w", buffering=1,
                                    encoding="utf-8", errors="replace")
        self._term = terminal.using(terminal.Terminal(self._term_file))
        self._term.__enter__()
        for n in (1, 2):
            os.dup2(fd, n)
        # sys.stdout/sys.stderr onto the file too, whatever objects they were (a harness may
        # have replaced them with ones that do not write to the descriptors)
        self._sys = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = (open(n, "w", buffering=1, encoding="utf-8", errors="replace",
                                       closefd=False) for n in (1, 2))
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
        self._term.__exit__(*exc)
        self._term_file.close()
        os.close(self.sink.fd)
        try:
            self._tidy()
        except OSError:  # a full disk: library.log stays as written
            pass
        for line in self.warnings.summary():
            log.warning("%s", line)

    def _warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self.sink.write(warnings.formatwarning(message, category, filename, lineno, line))
        self.warnings.add(f"{category.__name__}: {message}")

    def _tidy(self) -> None:
        """What was written during the block, as lines a person reads (frames dropped, each
        redraw at its last state); the printed warnings among them counted. The file is
        replaced whole (a child process that still holds the old one writes there, unread)."""
        with os.fdopen(open_nofollow(self.out, self.path, os.O_RDONLY), "rb") as f:
            head, raw = f.read(self._start), f.read()
        kept = []
        for line in raw.decode("utf-8", "replace").split("\n"):
            line = library_line(line)
            if line is not None:
                kept.append(line)
                self.warnings.scan(line)
        body = "".join(f"{ln}\n" for ln in kept).encode("utf-8")
        write_bytes_nofollow(self.out, self.path, head + body)


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
