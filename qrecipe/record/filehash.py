"""A per-machine memo of file digests, so a multi-GB checkpoint is hashed once, not every run.

An entry is keyed by what identifies one version of one file: its real path, size, mtime_ns,
ctime_ns, inode and device. Rewriting a file changes its mtime and ctime (ctime cannot be set
back by a user), so a changed file is hashed again; an unchanged one is read from the memo. The
digest itself is the same sha256 a fresh read gives: fingerprints do not change. Used only while
`memo(root)` is active (the runner points it into the qrecipe cache); small files are always
hashed (cheaper than the lookup).

A memo entry maps a file's identity to a digest, so a planted one could make a changed input
look unchanged: each entry carries a seal (qrecipe/boundary/sealed.py, this user's key) over
its identity and digest, and one that does not verify is ignored (the file is hashed again and
the entry rewritten, one log line).

While the memo is active, the process also keeps the digests it has already computed keyed by
the same identity without the path, so no file is read twice in one run: renaming a directory
(model.partial/ -> model/) changes its files' paths but not their inode, size, mtime or ctime,
so the manifest reuses the save stage's digests. Two threads asking for the same file wait for
one read. `remember` records a digest computed while the file was written
(qrecipe/record/canonical.py); `Follower` computes one right behind another thread's writer (a
library's shard writer). `sha256_stream` is the one loop that reads a file into a digest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterator, Optional, Tuple

from qrecipe.boundary import sealed
from qrecipe.record.atomic import write_bytes

log = logging.getLogger("qrecipe")
_KIND = "filehash"  # what a memo entry's seal is for


class Cancelled(Exception):
    """A hash given up because its result is no longer wanted (the job ended first)."""


def sha256_stream(f: BinaryIO, chunk: int, stop: Optional[threading.Event] = None,
                  at_eof: Optional[Callable[[int], bool]] = None) -> Tuple[str, int]:
    """(sha256, bytes read) of an unbuffered binary file from where it stands, `chunk` bytes a
    read: the one read loop behind every file digest (fingerprint.sha256_file, Follower). stop:
    raise Cancelled once set. at_eof(bytes so far): True to read again (a file still being
    written), False when EOF is the end; None: it is."""
    h, size = hashlib.sha256(), 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    while True:
        n = f.readinto(buf)
        if n:
            if stop is not None and stop.is_set():
                raise Cancelled(getattr(f, "name", "hash"))
            h.update(view[:n])
            size += n
        elif at_eof is None or not at_eof(size):
            return h.hexdigest(), size


_ROOT: Optional[Path] = None
MIN_BYTES = 1 << 20
# a Follower's read size; 64 MiB waited no less on the H200 host (docs/benchmarks.md, ninth session)
FOLLOW_CHUNK = 8 << 20
_LOCK = threading.Lock()
_SEEN: Dict[Tuple, str] = {}  # this process's digests, by _version(identity)
_INFLIGHT: Dict[Tuple, Future] = {}


@contextmanager
def memo(root: Path) -> Iterator[None]:
    global _ROOT
    old, _ROOT = _ROOT, Path(root)
    try:
        yield
    finally:
        _ROOT = old
        with _LOCK:
            _SEEN.clear()


def _identity(path: Path) -> dict:
    st = os.stat(path)
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "device": st.st_dev}


def _version(ident: dict) -> Tuple:
    return (ident["device"], ident["inode"], ident["size"], ident["mtime_ns"], ident["ctime_ns"])


def _entry(root: Path, ident: dict) -> Path:
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return root / key[:2] / f"{key}.json"


def digest(path: Path, compute: Callable[[Path], str]) -> str:
    """compute(path), or the memo's digest of this exact version of the file."""
    root = _ROOT  # fixed for this call: a background thread may outlive the memo block
    if root is None or os.path.getsize(path) < MIN_BYTES:
        return compute(path)
    while True:
        ident = _identity(path)
        version = _version(ident)
        with _LOCK:
            seen = _SEEN.get(version)
            pending = _INFLIGHT.get(version)
            if seen is None and pending is None:
                mine = _INFLIGHT[version] = Future()
        if seen is not None:
            # stored under this path too: a later run (a resume) finds it in the memo
            _store(_entry(root, ident), ident, seen)
            return seen
        if pending is None:
            return _compute(path, _entry(root, ident), ident, version, compute, mine)
        try:
            return pending.result()
        except Exception as e:  # noqa: BLE001
            if not isinstance(e, Cancelled):
                raise
            # the thread reading it gave up (its job no longer wanted it); this one still does


def _compute(path: Path, entry: Path, ident: dict, version: Tuple, compute, mine: Future) -> str:
    try:
        value = _saved(entry, ident)
        if value is None:
            value = compute(path)
            if _identity(path) == ident:  # not rewritten while it was read
                _write(entry, {"identity": ident, "sha256": value})
                with _LOCK:
                    _SEEN[version] = value
        else:
            with _LOCK:
                _SEEN[version] = value
    except BaseException as e:
        with _LOCK:
            _INFLIGHT.pop(version, None)
        mine.set_exception(e)
        raise
    with _LOCK:
        _INFLIGHT.pop(version, None)
    mine.set_result(value)
    return value


def remember(path: Path, sha256: str) -> None:
    """Record the digest of a file this process has just written and hashed on the way (the
    bytes went through hashlib as they were written). Only while the memo is active."""
    if _ROOT is None or os.path.getsize(path) < MIN_BYTES:
        return
    with _LOCK:
        _SEEN[_version(_identity(path))] = sha256


def active() -> bool:
    """Whether a memo is active (remember() records nothing otherwise)."""
    return _ROOT is not None


# filesystems whose writes raise a file's size only after its bytes are in the page cache
_LOCAL_FS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs")


def local_fs(path: Path) -> bool:
    """Whether path's filesystem is one of _LOCAL_FS (Linux /proc/self/mounts; False where that
    cannot be read)."""
    try:
        mounts = [line.split() for line in open("/proc/self/mounts")]
    except OSError:
        return False
    real = os.path.realpath(path)
    best, fstype = "", None
    for m in mounts:
        point = m[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fstype = point, m[2]
    return fstype in _LOCAL_FS


class Follower:
    """The sha256 of a file another thread is writing from its start, read right behind the
    writer: on a local Linux filesystem a file's bytes below its current size are written (the
    kernel raises the size after copying them), so reading up to EOF, again and again, sees
    only final bytes; once the writer says it is done (after closing), the rest is read.
    Appends only: the caller removes any old file at the path before the writer creates it,
    and starts a follower only where local_fs() says so (a network or FUSE filesystem need not
    order size and data). The digest goes to remember(); any failure just leaves the file to
    be read again later."""

    def __init__(self, path: Path):
        self.path, self.digest = Path(path), None
        self.read_while_writing = 0  # bytes hashed by the last catch-up before the writer was done
        self._final = False  # the writer is done: the next EOF is the end
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qrecipe-hash-follow",
                                        daemon=True)

    def start(self) -> "Follower":
        self._thread.start()
        return self

    def writer_done(self) -> None:
        self._done.set()

    def wait(self) -> Optional[str]:
        self._done.set()
        self._thread.join()
        return self.digest

    def _run(self) -> None:
        try:
            while not self.path.exists():  # the writer has not created it yet
                if self._done.wait(0.002) and not self.path.exists():
                    return
            with open(self.path, "rb", buffering=0) as f:
                digest, size = sha256_stream(f, FOLLOW_CHUNK, at_eof=self._more)
                st, fst = os.stat(self.path), os.fstat(f.fileno())
            if (st.st_ino, st.st_dev, st.st_size) == (fst.st_ino, fst.st_dev, size):
                self.digest = digest
                remember(self.path, self.digest)
        except OSError:
            pass

    def _more(self, size: int) -> bool:
        """At EOF: whether to read again. Once the writer is done (seen after an EOF), one more
        pass to the end reads the rest; until then, wait for it to write more."""
        if self._final:
            return False
        if not self._done.is_set():
            self.read_while_writing = size  # caught up while the writer was still writing
        self._final = self._done.wait(0.005)  # caught up with the writer
        return True


class WriteHashes:
    """The followers of one save (one per file a library writes); wait() joins them: the
    hashing left once the writes have ended, qrecipe's own seconds."""

    def __init__(self) -> None:
        self.followers: list = []

    def around(self, path, write: Callable[[], object]) -> object:
        """write() (which creates `path` and writes it whole), with a Follower right behind it
        where the memo is on and the filesystem is local; an old file at the path is removed
        first (the writer would truncate it under the follower)."""
        follower = None
        if active() and local_fs(Path(os.path.dirname(path) or ".")):
            if os.path.lexists(path):
                os.remove(path)
            follower = Follower(Path(path)).start()
            self.followers.append(follower)
        try:
            return write()
        finally:
            if follower is not None:
                follower.writer_done()

    def wait(self) -> int:
        """Join every follower; the number of files hashed (files under MIN_BYTES are not kept
        by the memo: cheaper to read again)."""
        return sum(f.wait() is not None for f in self.followers)


def _saved(entry: Path, ident: dict) -> Optional[str]:
    """The memo's digest for this identity, if its entry is there and its seal verifies."""
    try:
        saved = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    body = sealed.unsealed(_KIND, saved)
    if body is None:
        log.warning("file-hash memo: entry for %s not verified (no valid seal); hashing the "
                    "file again", ident["path"])
        return None
    value = body.get("sha256")
    return value if body.get("identity") == ident and isinstance(value, str) else None


def _store(entry: Path, ident: dict, sha256: str) -> None:
    if not entry.is_file() or _saved(entry, ident) != sha256:
        _write(entry, {"identity": ident, "sha256": sha256})


def _write(entry: Path, data: dict) -> None:
    try:
        write_bytes(entry, json.dumps(sealed.sealed(_KIND, data)).encode())
    except OSError:  # a read-only cache only costs the next run a re-hash
        pass
