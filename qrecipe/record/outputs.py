"""The output directory: frozen config, environment, fingerprints, metrics, manifest.

The manifest (sha256 of every artifact) is written last: its presence marks a run complete, so
a crashed or rejected run never looks like a finished one. The report command skips any run
directory without it.
"""
from __future__ import annotations

import json
import os
import platform
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

from qrecipe import __version__, cuda
from qrecipe.boundary.jsonfile import read_object
from qrecipe.boundary.rundir import inside
from qrecipe.errors import QRecipeError
from qrecipe.recipes.frozen import LOCK  # noqa: F401  (the lock's file name, used with the others)
from qrecipe.recipes.meta import installed_version
from qrecipe.record.atomic import TMP_PREFIX, write_bytes
from qrecipe.record.fingerprint import sha256_file

MANIFEST = "manifest.json"
ERROR = "error.json"
CORE_PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "tokenizers",
                 "hydra-core", "omegaconf", "datasets", "gguf", "numpy")
# The run log and the libraries' log (qrecipe/telemetry/capture.py: tidied when the job's
# capture ends, after the manifest) are still being written while the manifest is, so they are
# listed but not hashed; everything else in the directory is.
LIBRARY_LOG = "library.log"
_UNHASHED = {"run.log", LIBRARY_LOG}


def write_json(path: Path, data: Any, root: Optional[Path] = None) -> None:
    """A run's JSON files (metrics, fingerprints, env, markers): sorted, indented, atomic. root:
    the run directory it goes into (then no symbolic link is followed: record/atomic.py)."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode(),
                root)


def _git_commit() -> Dict[str, Any]:
    src = Path(__file__).resolve().parents[2]  # the checkout, when qrecipe runs from one
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(src), "status", "--porcelain",
                                     "--untracked-files=no"], capture_output=True, text=True,
                                    timeout=10).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}  # installed from a wheel: the version says it


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what the platform says); read once
    (a report compares every run's env.json against it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def environment(backend_versions: Dict[str, str], device: str) -> Dict[str, Any]:
    env: Dict[str, Any] = {
        "qrecipe": __version__, "git": _git_commit(),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "machine": platform.machine(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "packages": {p: installed_version(p) for p in CORE_PACKAGES},
        "backend_packages": backend_versions,
        "device": device, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    torch = sys.modules.get("torch")  # only if the job imported it
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
    gpu = cuda.loaded()
    if gpu is not None:
        env["gpus"] = [gpu.get_device_name(i) for i in range(gpu.device_count())]
    return env


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _artifacts(out: Path) -> Iterable[Path]:
    for f in sorted(out.rglob("*")):
        if (f.is_file() and f.name not in (MANIFEST, RUN_LOCK)
                and not f.name.startswith(TMP_PREFIX)):
            yield f


def write_manifest(out: Path) -> Path:
    files = {}
    for f in _artifacts(out):
        rel = str(f.relative_to(out))
        files[rel] = {"bytes": f.stat().st_size,
                      "sha256": None if f.name in _UNHASHED else sha256_file(f)}
    path = out / MANIFEST
    write_json(path, {"complete": True, "files": files,
                      "written": datetime.now(timezone.utc).isoformat(timespec="seconds")},
               root=out)
    return path


_SHA256 = re.compile(r"[0-9a-f]{64}")


def manifest_files(out: Path, key: str = "DIR") -> Dict[str, Tuple[Path, Optional[str]]]:
    """{relative path: (file, sha256 or None)} of a run's manifest.json, every entry checked
    first: a path that leaves the directory (absolute, '..', through a symbolic link, not a
    regular file) or a missing hash for anything but the run log is refused (QRecipeError
    naming the entry), so a received manifest never makes qrecipe read outside the run."""
    data = read_object(Path(out) / MANIFEST, key=key)
    files = data.get("files")
    if not isinstance(files, dict):
        raise QRecipeError(f"{MANIFEST} has no 'files' object: not a finished run", key=key,
                           value=str(out))
    checked = {}
    for rel, entry in files.items():
        f = inside(out, rel, key=key, what=f"{MANIFEST} entry")
        sha = entry.get("sha256") if isinstance(entry, dict) else entry
        if sha is None and rel not in _UNHASHED:
            raise QRecipeError(f"{MANIFEST} entry {rel!r} has no sha256; only "
                               f"{', '.join(sorted(_UNHASHED))} (appended to while the manifest "
                               "is written) may be unhashed", key=key, value=str(out))
        if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            raise QRecipeError(f"{MANIFEST} entry {rel!r} has a sha256 that is not 64 hex "
                               "digits", key=key, value=str(out))
        checked[rel] = (f, sha)
    return checked


def verify_manifest(out: Path) -> list[str]:
    """Paths whose bytes no longer match the manifest (empty list: intact); a manifest entry
    that leaves the directory or lacks its hash is refused (manifest_files)."""
    bad = []
    for rel, (f, sha) in manifest_files(out).items():
        if not f.is_file() or (sha is not None and sha256_file(f) != sha):
            bad.append(rel)
    return bad


# --- Run directory states (one rule, used by the runner, resume, report, verify, reproduce) ---

RUN_LOCK = ".qrecipe.lock"  # flock'ed by the run writing the directory; never in the manifest
STAGES = ".stages"  # per-stage completion markers of an unfinished run (see qrecipe/run/stages.py)
# What may sit in a directory that holds no result: Hydra's own record and log, the libraries'
# log, a failed attempt's error, the writer lock, temp files.
_BOOKKEEPING = {".hydra", "run.log", LIBRARY_LOG, ERROR, RUN_LOCK}


@dataclass(frozen=True)
class RunState:
    """status: absent (no such directory), empty (nothing but bookkeeping), incomplete (a run
    started here: recipe.lock.yaml, no manifest), complete (manifest marks it complete), foreign
    (other files, no qrecipe run)."""
    path: Path
    status: str
    stages: Tuple[str, ...] = ()  # finished stages of an incomplete run
    error: Optional[str] = None  # error.json's message, if an attempt failed

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def incomplete(self) -> bool:
        return self.status == "incomplete"

    def describe(self) -> str:
        if self.status == "incomplete":
            done = ", ".join(self.stages) or "none"
            return f"incomplete (no {MANIFEST}; finished stages: {done})"
        return self.status


MAX_JSON = 64 << 20  # a run's JSON files are KiB; a manifest of thousands of shards a few MiB


def load_json(path: Path) -> Optional[Dict[str, Any]]:
    """The JSON object in a run directory's file, or None: missing, unreadable, too big, not a
    JSON object, a symbolic link or not a regular file (a received directory's link is never
    read through, a FIFO never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = f.read(MAX_JSON + 1)
    try:
        value = json.loads(data) if len(data) <= MAX_JSON else None
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def run_state(path: Path) -> RunState:
    """Whether a directory holds a complete run, an unfinished one, or none. Complete means a
    readable manifest with complete: true (written last by the runner); the file hashes are
    checked by verify_manifest, not here."""
    path = Path(path)
    if not path.exists():
        return RunState(path, "absent")
    if not path.is_dir():
        return RunState(path, "foreign")
    err = (load_json(path / ERROR) or {}).get("error")
    if (load_json(path / MANIFEST) or {}).get("complete") is True:
        return RunState(path, "complete")
    if (path / LOCK).is_file():
        stages = tuple(sorted(p.name[:-len(".json")] for p in (path / STAGES).glob("*.json")))
        return RunState(path, "incomplete", stages, err)
    if all(p.name in _BOOKKEEPING or p.name.startswith(TMP_PREFIX) for p in path.iterdir()):
        return RunState(path, "empty", (), err)
    return RunState(path, "foreign", (), err)
