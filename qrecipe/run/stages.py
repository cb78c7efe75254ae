"""Per-stage completion markers of a run directory, so an interrupted run resumes where it
stopped: DIR/.stages/NAME.json is written (atomically) when stage NAME has finished, holding
what later stages and the report need from it (hashes, timings, metrics). A marker is trusted
only with what it vouches for: the quantize marker names the sha256 of model/'s weights, and
the evaluate marker the weights it scored.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from qrecipe.record import outputs
from qrecipe.record.fingerprint import hash_files

log = logging.getLogger("qrecipe")

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def weights_sha256(model_dir: Path) -> str:
    return hash_files(p for p in Path(model_dir).iterdir() if p.suffix in WEIGHT_SUFFIXES)


def mark(out: Path, stage: str, data: Dict[str, Any]) -> None:
    outputs.write_json(Path(out) / outputs.STAGES / f"{stage}.json", data)


def load(out: Path, stage: str) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((Path(out) / outputs.STAGES / f"{stage}.json").read_text())
    except (OSError, ValueError):
        return None


def finished_quantize(out: Path) -> Optional[Dict[str, Any]]:
    """The quantize marker, if model/ still holds exactly the weights it names."""
    done = load(out, "quantize")
    model = Path(out) / "model"
    if done is None or not model.is_dir():
        return None
    if weights_sha256(model) != done.get("quantized_weights_sha256"):
        log.warning("resume: model/ does not match its quantize marker; quantizing again")
        return None
    return done


def finished_eval(out: Path, weights_sha: str) -> Optional[Dict[str, Any]]:
    done = load(out, "evaluate")
    if done is None or done.get("quantized_weights_sha256") != weights_sha:
        return None
    return done


def clear(out: Path, *names: str) -> None:
    for n in names:
        p = Path(out) / n
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
