"""What reaches run.log: lines a person reads, never progress-bar frames or the backends' tables.

Progress bars belong to the terminal. tqdm (transformers, llm-compressor, datasets) writes its
frames to stderr and gptqmodel's LogBar writes frames and grid tables straight to stdout (its
logger does not propagate), so neither reaches the file handler by itself; what does reach it is
any stdlib record, and a library that logs a bar, a carriage-return redraw or a table through
`logging` would fill the file with frames. The file handler therefore gets `FileFilter` (drops a
record that is nothing but frames/table rows) and `FileFormatter` (keeps the readable lines of a
mixed record). Both are wired in conf/hydra/job_logging/qrecipe.yaml. While a job runs, the
libraries' own output goes to library.log instead (qrecipe/telemetry/capture.py, through
`library_line`), and run.log and the console keep qrecipe's lines (terminal.OwnLines).

The file itself is opened by `RunLogHandler`, which never writes through a symbolic link: a run
directory may come from someone else, and a `run.log` link there would make every log line an
append to a file of the sender's choosing (qrecipe/boundary/rundir.py).
"""
from __future__ import annotations

import copy
import errno
import logging
import os
import re
from typing import Optional

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# A progress-bar frame: tqdm's "42%|" / "it/s]" / "s/it]", block or shade runs (tqdm, LogBar),
# LogBar's "| 0:00:17 / 0:02:50" (elapsed / estimate).
_BAR = re.compile(r"\d+%\||\d+(\.\d+)?(it/s|s/it)\]|[\u2588\u2589\u258a\u258b\u258c\u258d\u258e"
                  r"\u258f\u2591\u2592\u2593]{3}|\| \d+:\d\d:\d\d / \d+:\d\d:\d\d")
# A table row or border: "+----+----+", "| a | b |", "|---|---|", or box-drawing characters.
_TABLE = re.compile(r"^\s*(\+[-=+:]+\+|\|.*\|)\s*$|[\u2500-\u257f]")


def clean(text: str) -> str:
    """The lines of `text` a person reads: ANSI codes removed, a carriage-return redraw reduced to
    its last state and dropped if that is a bar, table rows dropped. '' if nothing is left."""
    kept = []
    for line in _ANSI.sub("", text).split("\n"):
        line = line.rsplit("\r", 1)[-1].rstrip()
        if line.strip() and not _BAR.search(line) and not _TABLE.search(line):
            kept.append(line)
    return "\n".join(kept)


def library_line(raw: str) -> Optional[str]:
    """One line of a library's output as library.log keeps it (qrecipe/telemetry/capture.py):
    ANSI codes removed, a carriage-return redraw reduced to its last state; None for a blank
    line or a progress-bar frame. Tables stay: library.log is the libraries' own record."""
    line = _ANSI.sub("", raw).rsplit("\r", 1)[-1].rstrip()
    if not line.strip() or _BAR.search(line):
        return None
    return line


class FileFilter(logging.Filter):
    """Drops a record whose message has no readable line left (frames, tables, blank)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return True
        try:
            return bool(clean(record.getMessage()))
        except Exception:  # a library's bad format args: let the handler report it as usual
            return True


class FileFormatter(logging.Formatter):
    """A Formatter that writes only the readable lines of a message (tracebacks untouched).
    The record itself is not changed: the console handler formats the same record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        rec = copy.copy(record)
        rec.message = clean(record.message)
        return super().formatMessage(rec)


class RunLogHandler(logging.FileHandler):
    """logging.FileHandler whose file is opened with O_NOFOLLOW: a symbolic link at run.log is
    not written through (the lines go to os.devnull; the run then refuses the directory in one
    line, qrecipe/run/rundir.py). Append mode, as FileHandler's default."""

    def _open(self):
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.baseFilename, flags, 0o644)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
