"""Ctrl-C and SIGTERM (what SLURM sends before preemption) end a run cleanly: the partial output
stays marked incomplete (no manifest), and the user is told where it is and how to resume.

SIGTERM is turned into an exception in the main thread (SIGINT already is KeyboardInterrupt),
so the runner's normal unwinding records the state. gptqmodel's per-layer checkpointing installs
its own handlers while it quantizes: it finishes the current layer, commits it and raises
CheckpointStopped, which counts as an interruption too. SIGKILL cannot be caught: the directory
simply has no manifest, and the stage markers say what is left.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):
    """Raised in the main thread on SIGTERM. BaseException: `except Exception` must not eat it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def is_interruption(e: BaseException) -> bool:
    return isinstance(e, (Interrupted, KeyboardInterrupt)) or \
        type(e).__name__ == "CheckpointStopped"


def exit_code(e: BaseException) -> int:
    if isinstance(e, Interrupted):
        return EXIT_CODES.get(e.signum, 128 + e.signum)
    return 130  # SIGINT, or a signal gptqmodel's checkpointing caught (stopped at a layer)


def signal_name(e: BaseException) -> str:
    if isinstance(e, Interrupted):
        return str(e)
    if isinstance(e, KeyboardInterrupt):
        return "SIGINT"
    return "a signal (stopped at a layer boundary)"


def message(e: BaseException, out, stage: str | None) -> str:
    where = f" during {stage}" if stage else ""
    return (f"interrupted by {signal_name(e)}{where}: the partial output in {out} is "
            f"incomplete (no manifest); resume with: qrecipe resume {out}")


@contextmanager
def sigterm_raises():
    """While inside, SIGTERM raises Interrupted in the main thread (no-op in other threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
