"""Who may write a run directory, and what a new run does with one that already holds something.

A run claims its directory before it writes anything: it takes an exclusive lock (flock on
DIR/.qrecipe.lock: released by the kernel when the process dies, even by SIGKILL, so a lock is
never stale), then reads the directory's state (outputs.run_state) and decides:

- absent / empty: a fresh run; the directory is this run's.
- complete, same config: nothing to do (a re-run sweep skips its finished jobs).
- incomplete, same config: resume it (finished stages are not redone).
- anything else (another config's result, an unfinished run of another config, foreign files):
  refused with one line, unless `force=true`, which moves the old directory aside
  (DIR.replaced-<UTC time>) and starts fresh (also for a finished run of the same config).
  Nothing finished is ever deleted or overwritten.

"Same config" compares the fully resolved config with the directory's recipe.lock.yaml (read
through the safe loader, qrecipe/recipes/lock.py), ignoring keys that cannot change the result
(dry_run, and the user's own keys a lock never freezes: cache, force, trust_remote_code,
model.allow_pickle).

A run directory is data (qrecipe/boundary/rundir.py): one that is, or holds, a symbolic link
is refused before anything is written (the claim, and Hydra's callback before Hydra makes the
directory); the two Hydra resolvers below never point Hydra's own writes (run.log, .hydra/) into
such a directory either, so a link there is never written through, even by a dry run.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from qrecipe.boundary.rundir import check_no_symlinks, open_nofollow
from qrecipe.boundary.userkeys import without_user_only
from qrecipe.errors import QRecipeError
from qrecipe.recipes.lock import check_lock
from qrecipe.record import outputs

# Keys of the config that do not change what a run produces (besides the user's own keys a
# lock never freezes: userkeys.without_user_only).
_NOT_IDENTITY = ("dry_run", "defaults", "hydra")
HINT_KEY = "hydra.run.dir"


def identity(cfg_or_dict: Any) -> Dict[str, Any]:
    """What a config produces: the resolved config without the keys that cannot change it."""
    body = (cfg_or_dict if isinstance(cfg_or_dict, dict)
            else OmegaConf.to_container(cfg_or_dict, resolve=True))
    return {k: v for k, v in without_user_only(body).items() if k not in _NOT_IDENTITY}


def lock_identity(out: Path) -> Optional[Dict[str, Any]]:
    try:
        return identity(check_lock(out / outputs.LOCK))
    except Exception:  # unreadable or refused lock: treated as another config
        return None


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=,-]{0,127}")


def check_recipe_name(name) -> None:
    """recipe_name becomes a folder of the output path: one plain component, no traversal."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise QRecipeError("not a plain name (it becomes a folder of the output path)",
                           key="recipe_name", value=name,
                           allowed="letters, digits and _ . + = , - (no '/', no '..', not "
                                   "starting with '.')")


def check_writable(out: Path, key: str = HINT_KEY) -> None:
    """The output location can hold a directory: its nearest existing ancestor is a writable
    directory (or it is one). Cheap; creates nothing."""
    p = Path(out).absolute()
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise QRecipeError(f"cannot create the output directory: {probe} is a file, not a "
                           "directory", key=key, value=str(out),
                           hint="choose another output location")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise QRecipeError(f"cannot write the output directory: {probe} is read-only",
                           key=key, value=str(out), hint="choose a writable output location")


def write_error(e: OSError, out: Path) -> QRecipeError:
    """An OSError while writing results, as the user's problem it usually is."""
    name = str(e.filename or "")
    if e.errno == errno.EACCES and name and not name.startswith(str(Path(out).absolute())):
        return QRecipeError(f"permission denied: {name}", key=HINT_KEY, value=str(out),
                            hint="make the file readable (or the location writable)")
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied"}.get(e.errno, e.strerror or str(e))
    return QRecipeError(f"cannot write the results ({what}: {e.filename or out}); the partial "
                        "output stays incomplete", key=HINT_KEY, value=str(out),
                        hint="free space or choose another output location, then: "
                             f"qrecipe resume {out}")


class Claim:
    """The lock on a run directory and what this run may do with it. `owned`: the directory
    holds this run's work only (fresh, or an unfinished run of the same config), so errors may
    be recorded in it and a rejected fresh run may remove it."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.fd: Optional[int] = None
        self.owned = False
        self.fresh = False
        self.resuming = False
        check_no_symlinks(self.out)
        check_writable(self.out)
        self.state = outputs.run_state(self.out)
        if not self.state.complete:  # a complete run is never written again: no lock in it
            self._lock()

    def _lock(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.fd = open_nofollow(self.out, self.out / outputs.RUN_LOCK,
                                    os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise write_error(e, self.out) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise QRecipeError(f"another qrecipe run (pid {pid}) is writing this directory",
                               key=HINT_KEY, value=str(self.out),
                               hint="wait for it, or choose another output directory") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        self.state = outputs.run_state(self.out)

    def decide(self, cfg) -> str:
        """'fresh', 'resume' or 'skip' (complete already); raises when refused."""
        st = self.state
        if st.status in ("absent", "empty"):
            self.owned = self.fresh = True
            return "fresh"
        if cfg.get("force", False):
            self._move_aside()
            if self.fd is None:
                self._lock()
            self.owned = self.fresh = True
            return "fresh"
        same = lock_identity(self.out) == identity(cfg)
        if same and st.complete:
            return "skip"
        if same and st.incomplete:
            self.owned = self.resuming = True
            return "resume"
        what = {"complete": "a complete run of another config",
                "incomplete": "an unfinished run of another config",
                "foreign": "files that are not a qrecipe run"}[st.status]
        raise QRecipeError(f"the output directory holds {what}; refusing to overwrite it",
                           key=HINT_KEY, value=str(self.out),
                           hint="choose another output directory, or add force=true to move "
                                "the old one aside (nothing is deleted)")

    def _move_aside(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest = self.out.with_name(f"{self.out.name}.replaced-{stamp}")
        keep = {".hydra", "run.log", outputs.RUN_LOCK}  # this run's own Hydra record and log
        dest.mkdir()
        for p in self.out.iterdir():
            if p.name not in keep:
                p.rename(dest / p.name)
        print(f"force: moved the previous contents of {self.out} to {dest}", file=sys.stderr)

    def release(self, remove_lock: bool = False) -> None:
        if self.fd is None:
            return
        if remove_lock or not self.owned:  # leave no lock file in a directory not ours
            (self.out / outputs.RUN_LOCK).unlink(missing_ok=True)
        os.close(self.fd)  # closing drops the flock
        self.fd = None


# --- Hydra hooks: keep Hydra from rewriting the record of a run that already exists ---------

def _linked(output_dir: str) -> bool:
    """Whether the directory is, or holds, a symbolic link (or a FIFO/device): Hydra's own
    writes (which follow links) must not go there; the job then refuses it in one line."""
    try:
        check_no_symlinks(Path(output_dir))
    except QRecipeError:
        return True
    return False


def hydra_subdir(output_dir: str) -> Optional[str]:
    """hydra.output_subdir: Hydra writes .hydra/ before the job starts; a directory where a run
    already started keeps its original record (the lock says what runs there), and one holding
    a symbolic link gets none."""
    if _linked(output_dir) or os.path.lexists(Path(output_dir) / outputs.LOCK):
        return None
    return ".hydra"


def hydra_run_log(output_dir: str) -> str:
    """The run log's file: a complete run's directory is never written again (a re-run that
    finds it complete logs to the console only), nor one that holds a symbolic link."""
    if _linked(output_dir) or outputs.run_state(Path(output_dir)).complete:
        return os.devnull
    return str(Path(output_dir) / "run.log")


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("qrecipe_hydra_subdir", hydra_subdir, replace=True)
    OmegaConf.register_new_resolver("qrecipe_run_log", hydra_run_log, replace=True)


class OutputCheck(Callback):
    """Hydra callback: the output location is checked before Hydra creates it, so a file in
    the way or a read-only location is one line (exit 2), not Hydra's traceback; and before
    Hydra writes anything there (.hydra/, run.log, multirun.yaml, all of which follow links), a
    directory that is or holds a symbolic link is refused in one line."""

    def on_run_start(self, config, **kwargs) -> None:
        self._check(config, "run")

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check(config, "sweep")

    @staticmethod
    def _check(config, mode: str) -> None:
        try:
            check_recipe_name(config.get("recipe_name"))
            check_no_symlinks(Path(config.hydra[mode].dir), key=f"hydra.{mode}.dir")
            check_writable(Path(config.hydra[mode].dir), key=f"hydra.{mode}.dir")
        except QRecipeError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
