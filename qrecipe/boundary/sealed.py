"""Seals: what qrecipe wrote itself, told apart from what someone else put in its place.

A stage marker of a run directory (run/stages.py), a cache entry (record/cache.py) or a
file-hash memo entry (record/filehash.py) is trusted only with a seal: HMAC-SHA256, under a
secret key only this user can read, over the entry's kind and its canonical JSON. A directory
or cache received from someone else (or edited) carries no valid seal, so its markers and
entries are not believed: the stage runs again, the entry is recomputed.

The key lives at $QRECIPE_SEAL_KEY_FILE, else $XDG_CONFIG_HOME/qrecipe/seal.key, else
~/.config/qrecipe/seal.key: never in the cache (which a recipe could once point anywhere) and
never settable by a recipe. It is created (32 random bytes, hex, mode 0600) on first use,
atomically (two processes starting together end up with the same key). A key that cannot be
read or made, or that others may read, is not used: this process seals with a key of its own
(one warning), so nothing earlier verifies and nothing it writes verifies later: slower, never
wrong.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Dict, Optional

log = logging.getLogger("qrecipe")

ENV = "QRECIPE_SEAL_KEY_FILE"
SEAL = "seal"  # the field of a sealed JSON object that holds its seal
_KEYS: Dict[str, bytes] = {}  # key file -> key, read once per process


def key_file() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "qrecipe" / "seal.key"


def _key() -> bytes:
    path = key_file()
    key = _KEYS.get(str(path))
    if key is None:
        try:
            key = _read_key(path) or _make_key(path)
        except (OSError, ValueError) as e:
            log.warning("seal key %s not usable (%s): this run reuses no earlier stage or cache "
                        "entry, and later runs will not reuse its", path, e)
            key = os.urandom(32)
        _KEYS[str(path)] = key
    return key


def _read_key(path: Path) -> Optional[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ValueError("others may read or write it: chmod 600, owned by you")
        key = f.read(4096).strip()
    if len(key) < 32:
        raise ValueError("shorter than 32 bytes")
    return key


def _make_key(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32).hex().encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    key = _read_key(path)
    if key is None:
        raise ValueError("vanished after it was made")
    return key


def canonical(body: Any) -> bytes:
    """The bytes a seal covers: sorted, compact JSON (a value read back from a JSON file gives
    the same bytes as the value that was written)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=str).encode()


def seal(kind: str, body: Any) -> str:
    """The seal of `body` (JSON-able) as a `kind` ("stage:quantize", "cache:tokens/KEY", ...):
    the kind is part of it, so a seal never vouches for anything of another kind or key."""
    return hmac.new(_key(), kind.encode() + b"\0" + canonical(body), hashlib.sha256).hexdigest()


def verify(kind: str, body: Any, tag: Any) -> bool:
    return isinstance(tag, str) and hmac.compare_digest(seal(kind, body), tag)


def sealed(kind: str, body: Dict[str, Any]) -> Dict[str, Any]:
    """body with its seal added (the field SEAL); body is normalized through JSON first."""
    body = json.loads(canonical(body))
    return {**body, SEAL: seal(kind, body)}


def unsealed(kind: str, doc: Any) -> Optional[Dict[str, Any]]:
    """doc without its seal if doc is a JSON object sealed as `kind` by this user; else None."""
    if not isinstance(doc, dict) or SEAL not in doc:
        return None
    body = {k: v for k, v in doc.items() if k != SEAL}
    return body if verify(kind, body, doc[SEAL]) else None
