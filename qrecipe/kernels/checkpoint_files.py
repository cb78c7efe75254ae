"""What the load-time layout rewrites (ct_gptq.py, gptq_awq.py) share: reading a checkpoint's
tensors, writing the rewritten one beside links to everything else, and finding the decoder
block a tensor belongs to. Importing it imports neither torch nor safetensors."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_tensors(src: Path) -> Dict[str, Any]:
    """Every tensor of a checkpoint folder (one file or an index's shards), on the CPU."""
    from safetensors.torch import load_file
    index = src / INDEX
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) \
        if index.is_file() else [WEIGHTS]
    out: Dict[str, Any] = {}
    for f in files:
        out.update(load_file(str(src / f)))
    return out


def write(src: Path, dst: Path, tensors: Dict[str, Any], conf: Dict[str, Any]) -> Path:
    """dst holding `tensors` as one model.safetensors, `conf` as config.json, and links to every
    other file of src (tokenizer, generation config). Returns dst."""
    from safetensors.torch import save_file
    dst.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst / WEIGHTS), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(conf, indent=2))
    for f in src.iterdir():
        if f.name not in ("config.json", WEIGHTS, INDEX) and not f.name.endswith(".safetensors"):
            os.symlink(f.resolve(), dst / f.name)
    return dst


def block_of(name: str) -> Optional[Tuple[str, str]]:
    """model.layers.3.mlp.up_proj -> ("model.layers.3", "mlp.up_proj"): the numbered decoder
    block a module or tensor sits in and its name inside it; None outside any."""
    parts = name.split(".")
    i = next((j for j in range(len(parts)) if parts[j].isdigit()), None)
    return None if i is None else (".".join(parts[: i + 1]), ".".join(parts[i + 1:]))
