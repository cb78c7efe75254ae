"""A saved checkpoint's unquantized tensors in the recipe's dtype, whatever dtype the job computed
in: the same recipe gives a checkpoint of the same layout, dtype and size on every machine.

On a CPU without fast bfloat16 matmuls a bfloat16 recipe computes in float32
(qrecipe/run/dtypes.py), and every backend then saves the tensors it leaves unquantized
(embeddings, norms, an unquantized lm_head) in float32: SmolLM2's GPTQ w4 checkpoint was 166.8 MB
there against 112.7 MB elsewhere. `recast` rewrites those tensors in the recipe's dtype, and
config.json's dtype with them. A quantized layer's own tensors (packed weights, scales, zero
points, bitsandbytes' quantization state) are never touched: a layer is quantized when any of
its tensors is not a float (qweight, weight_packed, an int8/uint8 weight), and all of its
tensors stay as the backend wrote them.

Each rewritten file is streamed tensor by tensor in safetensors' own layout
(qrecipe/record/canonical.py: a file's bytes depend on its tensors only) into a temp file that
replaces it (qrecipe/record/atomic.py, under the run directory `root`: no link followed). The
checkpoint's hashes are computed after (the runner's save step).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

from qrecipe.record.atomic import replacing, write_bytes
from qrecipe.record.canonical import canonical_order, header_bytes
from qrecipe.record.stheader import FLOAT_WIDTHS as _SIZE
from qrecipe.record.stheader import read_header

# safetensors' names of the float dtypes a recipe may ask for, and their sizes
ST = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
_INDEX = "model.safetensors.index.json"


def owner(name: str) -> str:
    """The layer a tensor belongs to: its name without the tensor's own part, and without the
    `weight` / `quant_state` parts bitsandbytes nests its state under."""
    parts = name.split(".")[:-1]
    while parts and (parts[-1] == "weight" or parts[-1].startswith("quant_state")):
        parts.pop()
    return ".".join(parts)


def to_cast(header: Dict[str, dict], target: str) -> List[str]:
    """Names of the float tensors of unquantized layers whose dtype is not `target`."""
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    quantized = {owner(k) for k, v in tensors.items() if v["dtype"] not in _SIZE}
    return sorted(k for k, v in tensors.items() if v["dtype"] in _SIZE and v["dtype"] != target
                  and owner(k) not in quantized)


def recast(model_dir: Path, dtype: str, root: Path) -> int:
    """Every unquantized float tensor of model_dir's safetensors files in `dtype`, config.json's
    dtype set to it, the shard index's total size updated; returns how many tensors changed.
    root: the run directory model_dir lies in."""
    target = ST[dtype]
    files = sorted(Path(model_dir).glob("*.safetensors"))
    n = sum(_recast_file(f, target, root) for f in files)
    if n and (Path(model_dir) / _INDEX).is_file():
        _fix_index(Path(model_dir), files, root)
    _fix_config(Path(model_dir), dtype, root)
    return n


def _recast_file(f: Path, target: str, root: Path) -> int:
    with open(f, "rb") as src:
        n, header = read_header(src)
        names = set(to_cast(header, target))
        if not names:
            return 0
        new = {k: dict(v) for k, v in header.items()}
        for k in names:
            size = _numel(header[k]["shape"]) * _SIZE[target]
            new[k].update(dtype=target, data_offsets=[0, size])
        order = canonical_order({k: v["dtype"] for k, v in new.items() if k != "__metadata__"})
        if order is None:  # a dtype without a torch equivalent: the checkpoint stays as it is
            return 0
        with replacing(f, root=root) as tmp, open(tmp, "wb") as dst:
            dst.write(header_bytes(new, order))
            for k in order:
                begin, end = header[k]["data_offsets"]
                raw = os.pread(src.fileno(), end - begin, 8 + n + begin)
                dst.write(_cast(raw, header[k]["dtype"], target) if k in names else raw)
    return len(names)


def _numel(shape: List[int]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def _cast(raw: bytes, src: str, dst: str) -> bytes:
    import torch  # deferred: torch (the runner has it loaded by now)
    if not raw:
        return raw
    dt = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16}
    t = torch.frombuffer(bytearray(raw), dtype=dt[src]).to(dt[dst])
    return t.view(torch.uint8).numpy().tobytes()


def _fix_index(model_dir: Path, files: List[Path], root: Path) -> None:
    path = model_dir / _INDEX
    index = json.loads(path.read_text())
    total = 0
    for f in files:
        with open(f, "rb") as src:
            _, header = read_header(src)
        total += sum(v["data_offsets"][1] - v["data_offsets"][0]
                     for k, v in header.items() if k != "__metadata__")
    index.setdefault("metadata", {})["total_size"] = total
    write_bytes(path, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode(), root=root)


def _fix_config(model_dir: Path, dtype: str, root: Path) -> None:
    """config.json's dtype (transformers 5: `dtype`; older: `torch_dtype`) set to dtype."""
    path = model_dir / "config.json"
    if not path.is_file():
        return
    conf = json.loads(path.read_text())
    keys = [k for k in ("dtype", "torch_dtype") if k in conf] or ["dtype"]
    if all(conf.get(k) == dtype for k in keys):
        return
    for k in keys:
        conf[k] = dtype
    write_bytes(path, (json.dumps(conf, indent=2, sort_keys=True) + "\n").encode(), root=root)
