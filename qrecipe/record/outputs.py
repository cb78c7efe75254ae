"""The output directory: frozen config, environment, fingerprints, metrics, manifest.

The manifest (sha256 of every artifact) is written last: its presence marks a run complete, so
a crashed or rejected run never looks like a finished one. The report command skips any run
directory without it.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple


from qrecipe.recipes.frozen import LOCK  # noqa: F401  (the lock's file name, used with the others)
from qrecipe.record.fingerprint import sha256_file

MANIFEST = "manifest.json"
ERROR = "error.json"
CORE_PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "tokenizers",
                 "hydra-core", "omegaconf", "datasets", "gguf", "numpy")
# The run log is still being appended to while the manifest is written, so it is listed but not
# hashed; everything else in the directory is.
_UNHASHED = {"run.log"}


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are meant to be shared
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)


def _pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


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


def environment(backend_versions: Dict[str, str], device: str) -> Dict[str, Any]:
    from qrecipe import __version__
    env: Dict[str, Any] = {
        "qrecipe": __version__, "git": _git_commit(),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "packages": {p: _pkg_version(p) for p in CORE_PACKAGES},
        "backend_packages": backend_versions,
        "device": device, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _artifacts(out: Path) -> Iterable[Path]:
    for f in sorted(out.rglob("*")):
        if (f.is_file() and f.name not in (MANIFEST, RUN_LOCK)
                and not f.name.startswith(".tmp-")):
            yield f


def write_manifest(out: Path) -> Path:
    files = {}
    for f in _artifacts(out):
        rel = str(f.relative_to(out))
        files[rel] = {"bytes": f.stat().st_size,
                      "sha256": None if f.name in _UNHASHED else sha256_file(f)}
    path = out / MANIFEST
    write_json(path, {"complete": True, "files": files,
                      "written": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return path


def verify_manifest(out: Path) -> list[str]:
    """Paths whose bytes no longer match the manifest (empty list: intact)."""
    data = json.loads((out / MANIFEST).read_text())
    bad = []
    for rel, entry in data["files"].items():
        f = out / rel
        if not f.is_file() or (entry["sha256"] and sha256_file(f) != entry["sha256"]):
            bad.append(rel)
    return bad


# --- Run directory states (one rule, used by the runner, resume, report, verify, reproduce) ---

RUN_LOCK = ".qrecipe.lock"  # flock'ed by the run writing the directory; never in the manifest
STAGES = ".stages"  # per-stage completion markers of an unfinished run (see qrecipe/run/stages.py)
# What may sit in a directory that holds no result: Hydra's own record and log, a failed
# attempt's error, the writer lock, temp files.
_BOOKKEEPING = {".hydra", "run.log", ERROR, RUN_LOCK}


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


def run_state(path: Path) -> RunState:
    """Whether a directory holds a complete run, an unfinished one, or none. Complete means a
    readable manifest with complete: true (written last by the runner); the file hashes are
    checked by verify_manifest, not here."""
    path = Path(path)
    if not path.exists():
        return RunState(path, "absent")
    if not path.is_dir():
        return RunState(path, "foreign")
    err = None
    try:
        err = (json.loads((path / ERROR).read_text()) or {}).get("error")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        if json.loads((path / MANIFEST).read_text()).get("complete") is True:
            return RunState(path, "complete")
    except (OSError, ValueError, AttributeError):
        pass
    if (path / LOCK).is_file():
        stages = tuple(sorted(p.name[:-len(".json")] for p in (path / STAGES).glob("*.json")))
        return RunState(path, "incomplete", stages, err)
    if all(p.name in _BOOKKEEPING or p.name.startswith(".tmp-") for p in path.iterdir()):
        return RunState(path, "empty", (), err)
    return RunState(path, "foreign", (), err)
