"""Per-stage completion markers of a run directory, so an interrupted run resumes where it
stopped: DIR/.stages/NAME.json is written (atomically) when stage NAME has finished, holding
what later stages and the report need from it (hashes, timings, metrics).

A marker is believed only when it proves itself, because a run directory may come from someone
else (and a forged marker with a swapped model/ would otherwise finish as a "complete" run with
forged metrics): it carries a seal (qrecipe/boundary/sealed.py: HMAC under this user's key) over
its content and the sha256 of the directory's recipe.lock.yaml, and the quantize marker names
the sha256 of every file of model/, the evaluate marker the weights it scored. Before a stage is
skipped all of that is checked again; a marker that fails is not used (one log line) and the
stage runs again.

The backend's per-layer checkpoint of an unfinished quantization (.checkpoints/quantize,
gptqmodel's content-addressed store: its CURRENT file names every object by sha256, and the
library checks each object against it) is sealed the same way while it is written
(`CheckpointSeal`: CURRENT's sha256, sealed right after each commit through the backend's
`on_checkpoint` callback, and by a watcher thread for a backend without one), and kept for a
resume only if that seal verifies; otherwise quantization starts from the first layer.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qrecipe.boundary import sealed
from qrecipe.record import outputs
from qrecipe.record.fingerprint import hash_files, sha256_files

log = logging.getLogger("qrecipe")

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def weights_sha256(model_dir: Path) -> str:
    return hash_files(p for p in Path(model_dir).iterdir() if p.suffix in WEIGHT_SUFFIXES)


def model_files(model_dir: Path) -> Dict[str, str]:
    """{path relative to model_dir: sha256} of every file under it: what the quantize marker
    vouches for (config and tokenizer files too, not only the weights)."""
    model_dir = Path(model_dir)
    files = [p for p in sorted(model_dir.rglob("*")) if p.is_file() and not p.is_symlink()]
    return {str(p.relative_to(model_dir)): d for p, d in sha256_files(files).items()}


def _lock_sha256(out: Path) -> Optional[str]:
    try:
        return hashlib.sha256((Path(out) / outputs.LOCK).read_bytes()).hexdigest()
    except OSError:
        return None


def _marker(out: Path, stage: str) -> Path:
    return Path(out) / outputs.STAGES / f"{stage}.json"


def _write_sealed(out: Path, path: Path, kind: str, data: Dict[str, Any]) -> None:
    body = {**data, "lock_sha256": _lock_sha256(out)}
    outputs.write_json(path, sealed.sealed(kind, body), root=out)


def _read_sealed(out: Path, path: Path, kind: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """(body, "") if path holds a JSON object sealed as `kind` by this user for this
    directory's lock; (None, why) otherwise (why "" when there is no such file)."""
    doc = outputs.load_json(path)
    if doc is None:
        return None, ""
    body = sealed.unsealed(kind, doc)
    if body is None:
        return None, "its seal does not match: written by another user or machine, or edited"
    if body.get("lock_sha256") != _lock_sha256(out):
        return None, "it was written for another recipe.lock.yaml"
    return body, ""


def mark(out: Path, stage: str, data: Dict[str, Any]) -> None:
    _write_sealed(out, _marker(out, stage), f"stage:{stage}", data)


def load(out: Path, stage: str) -> Optional[Dict[str, Any]]:
    """The marker's content if it is sealed by this user for this stage and this directory's
    lock; None (one log line if a marker was there) otherwise."""
    body, why = _read_sealed(out, _marker(out, stage), f"stage:{stage}")
    return _redo(stage, why) if why else body


def _redo(stage: str, why: str) -> None:
    log.warning("resume: stage %s not verified (%s); running it again", stage, why)


def finished_quantize(out: Path) -> Optional[Dict[str, Any]]:
    """The quantize marker, if it verifies and model/ still holds exactly the files it names."""
    done = load(out, "quantize")
    if done is None:
        return None
    model = Path(out) / "model"
    if not model.is_dir():
        return _redo("quantize", "model/ is missing")
    vouched = done.get("model_files")
    if not isinstance(vouched, dict):
        return _redo("quantize", "its marker names no files of model/")
    now = model_files(model)
    changed = _differ(vouched, now)
    if changed:
        return _redo("quantize", f"model/ differs from what its marker vouches for: "
                                 f"{', '.join(changed[:3])}")
    if weights_sha256(model) != done.get("quantized_weights_sha256"):
        return _redo("quantize", "model/'s weights differ from its marker")
    return done


def _differ(vouched: Dict[str, Any], now: Dict[str, str]) -> List[str]:
    return sorted(k for k in set(vouched) | set(now) if vouched.get(k) != now.get(k))


def finished_eval(out: Path, weights_sha: str) -> Optional[Dict[str, Any]]:
    """The evaluate marker, if it verifies and scored these weights."""
    done = load(out, "evaluate")
    if done is None or done.get("quantized_weights_sha256") != weights_sha:
        return None
    return done


CHECKPOINTS = ".checkpoints"
_CKPT = "quantize"  # the stage whose backend keeps per-layer checkpoints
_CKPT_KIND = "checkpoint:quantize"


def checkpoint_dir(out: Path) -> Path:
    """Where the backend keeps the quantize stage's per-layer checkpoints."""
    return Path(out) / CHECKPOINTS / _CKPT


def _checkpoint_seal(out: Path) -> Path:
    return Path(out) / CHECKPOINTS / f"{_CKPT}.seal.json"


def _current_sha256(out: Path) -> Optional[str]:
    try:
        return hashlib.sha256((checkpoint_dir(out) / "CURRENT").read_bytes()).hexdigest()
    except OSError:
        return None


def keep_verified_checkpoints(out: Path) -> None:
    """Before quantizing: an earlier attempt's per-layer checkpoint stays only if its seal
    names its CURRENT file as it is now; otherwise it is removed (one log line) and
    quantization starts from the first layer."""
    current = _current_sha256(out)
    if current is None:
        return  # nothing published: the backend starts from the first layer anyway
    body, why = _read_sealed(out, _checkpoint_seal(out), _CKPT_KIND)
    if body is None or body.get("current_sha256") != current:
        log.warning("resume: the per-layer checkpoints of stage quantize are not verified "
                    "(%s); quantizing from the first layer", why or "no seal names them")
        clear(out, CHECKPOINTS)


class CheckpointSeal:
    """While the backend quantizes: seal its checkpoint's CURRENT file each time it changes,
    so a resume can tell this run's checkpoint from a planted one. `seal` is handed to the
    backend (QuantizeRequest.on_checkpoint) and runs right after each commit, before the next
    layer starts: a kill inside a layer always finds the previous commit sealed. A watcher
    thread (a stat every `every` seconds, and once more at the end) covers a backend that
    commits without calling back; a kill between such a commit and its seal costs that
    commit only (the resume starts over)."""

    def __init__(self, out: Path, every: float = 0.1):
        self.out, self.every, self._last = Path(out), every, None
        self._lock = threading.Lock()  # the backend's thread and the watcher both seal
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qrecipe-ckpt-seal", daemon=True)

    def __enter__(self) -> "CheckpointSeal":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seal()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.seal()

    def seal(self) -> None:
        """Seal CURRENT as it is now, if it changed since the last seal."""
        with self._lock:
            self._seal()

    def _seal(self) -> None:
        try:
            st = (checkpoint_dir(self.out) / "CURRENT").stat()
        except OSError:
            return
        if (st.st_mtime_ns, st.st_size, st.st_ino) == self._last:
            return
        current = _current_sha256(self.out)
        if current is not None:
            _write_sealed(self.out, _checkpoint_seal(self.out), _CKPT_KIND,
                          {"current_sha256": current})
            self._last = (st.st_mtime_ns, st.st_size, st.st_ino)


def clear(out: Path, *names: str) -> None:
    for n in names:
        p = Path(out) / n
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
