"""Model sources: a hub id (pinned by revision), a local transformers directory, or a GGUF file
(also one shipped inside a Python package, named pkg://PACKAGE/FILE).

Three jobs: describe a model's shapes without loading weights (for validation), fingerprint its
input weights, and materialize it as a plain transformers directory that every backend can load.
A GGUF model is dequantized once into the cache and reused by every later run and sweep job.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from qrecipe.errors import QRecipeError
from qrecipe.paths import resolve_path
from qrecipe.record.fingerprint import hash_files, sha256_text

log = logging.getLogger(__name__)

SOURCES = ("hub", "local", "gguf")
DTYPES = ("float32", "float16", "bfloat16", "auto")


@dataclass(frozen=True)
class ModelInfo:
    architecture: str
    hidden_size: int
    intermediate_size: int
    num_layers: int

    def linear_in_features(self) -> dict:
        """in_features of the quantized linear layers: what a group size must divide."""
        return {"hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size}


def _check_exists(cfg) -> Path:
    p = resolve_path(cfg.path)
    if cfg.source == "gguf" and not p.is_file():
        raise QRecipeError("GGUF file not found", key="model.path", value=cfg.path)
    if cfg.source == "local" and not (p / "config.json").is_file():
        raise QRecipeError("not a transformers model directory (no config.json)",
                           key="model.path", value=cfg.path)
    return p


def describe(cfg) -> ModelInfo:
    """Shapes from metadata only: GGUF header, config.json, or the hub's config.json."""
    if cfg.source not in SOURCES:
        raise QRecipeError("unknown model source", key="model.source", value=cfg.source,
                           allowed=SOURCES)
    if cfg.source == "gguf":
        return _describe_gguf(_check_exists(cfg))
    if cfg.source == "local":
        conf = json.loads((_check_exists(cfg) / "config.json").read_text())
    else:
        conf = json.loads(Path(_hub_file(cfg, "config.json")).read_text())
    return ModelInfo(architecture=(conf.get("architectures") or ["?"])[0],
                     hidden_size=int(conf["hidden_size"]),
                     intermediate_size=int(conf.get("intermediate_size", conf["hidden_size"] * 4)),
                     num_layers=int(conf.get("num_hidden_layers", 0)))


def _describe_gguf(path: Path) -> ModelInfo:
    from qrecipe.inputs.gguf_meta import (
        read_fields,  # header only: ~1000x faster than GGUFReader
    )

    keys = ("{arch}.embedding_length", "{arch}.feed_forward_length", "{arch}.block_count")
    fields = read_fields(path, ("general.architecture",) + keys)
    if fields and all(isinstance(fields.get(k), int) for k in keys) \
            and isinstance(fields.get("general.architecture"), str):
        return ModelInfo(architecture=fields["general.architecture"],
                         hidden_size=int(fields[keys[0]]),
                         intermediate_size=int(fields[keys[1]]), num_layers=int(fields[keys[2]]))
    from gguf import GGUFReader  # numpy only: cheap, and no weights are read

    reader = GGUFReader(str(path))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()

    def field(name: str) -> int:
        f = reader.fields[f"{arch}.{name}"]
        return int(f.parts[f.data[0]][0])

    return ModelInfo(architecture=arch, hidden_size=field("embedding_length"),
                     intermediate_size=field("feed_forward_length"),
                     num_layers=field("block_count"))


def _hub_file(cfg, filename: str) -> str:
    try:
        from huggingface_hub import hf_hub_download
        return hf_hub_download(cfg.path, filename, revision=cfg.revision)
    except Exception as e:  # offline, gated, or a typo in the id: all fixable by the user
        raise QRecipeError(f"cannot fetch {filename} from the hub ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]})", key="model.path", value=cfg.path,
                           hint="check the id and revision, log in for gated models, or use "
                                "model.source=local / gguf offline") from None


def fingerprint(cfg, stop=None) -> str:
    """sha256 naming the exact input weights. Hub models: the repo id and its resolved commit
    (a content hash kept by the hub); files on disk: their bytes (`stop`: see
    fingerprint.Background)."""
    if cfg.source == "hub":
        from huggingface_hub import HfApi
        try:
            sha = HfApi().model_info(cfg.path, revision=cfg.revision).sha
        except Exception:  # offline but cached: the snapshot's folder name is the commit
            sha = Path(_hub_file(cfg, "config.json")).parent.name
        return sha256_text(f"hub:{cfg.path}@{sha}")
    p = _check_exists(cfg)
    if cfg.source == "gguf":
        return hash_files([p], stop)
    files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".json"))
    return hash_files(files, stop)


def materialize(cfg, cache_dir: Path, model_fp) -> Path:
    """A plain transformers directory (weights + tokenizer) of the unquantized model. model_fp()
    gives the input's fingerprint (called for a GGUF model only: it names the cached copy)."""
    if cfg.source == "local":
        return _check_exists(cfg)
    if cfg.source == "hub":
        from huggingface_hub import snapshot_download

        from qrecipe.inputs.weights import PICKLE_SUFFIXES, check_model_dir
        allow_pickle = bool(cfg.get("allow_pickle", False))
        # Loading safety: pickle checkpoints are not even downloaded without the opt-in.
        patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
        patterns += [f"*{s}" for s in PICKLE_SUFFIXES] if allow_pickle else []
        snap = Path(snapshot_download(cfg.path, revision=cfg.revision, allow_patterns=patterns))
        check_model_dir(snap, allow_pickle)
        return snap
    dest = cache_dir / "models" / model_fp()[:16]
    if (dest / "config.json").is_file():
        log.info("model: reusing dequantized GGUF at %s", dest)
        return dest
    src = _check_exists(cfg)
    log.info("model: dequantizing %s into %s (once; later runs reuse it)", src.name, dest)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name,
                                                 dtype=_torch_dtype("float32"))
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer or src.parent,
                                        gguf_file=None if cfg.tokenizer else src.name)
    # transformers marks a GGUF-loaded model as quantized; the weights are plain fp32 tensors now,
    # and save_pretrained refuses a model that still carries the GGUF quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temp dir and rename: concurrent sweep jobs never see a half-written model.
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.rename(tmp, dest)
    except OSError:  # another job won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _torch_dtype(name: str):
    import torch
    return "auto" if name == "auto" else getattr(torch, name)


def load_causal_lm(path: Path, dtype: str = "float32", device: str = "cpu",
                   device_map: Optional[str] = None, max_memory: Optional[dict] = None,
                   kernel: str = "auto", allow_jit: bool = False):
    """Plain transformers loading, used for the fp baseline and to reload saved checkpoints.
    A quantized checkpoint loads with the kernel qrecipe/kernels/table.py resolves (recorded on the
    model as `qrecipe_kernel`), never with whatever its library would pick by itself. A kernel
    of another format (`via`) loads a rewritten copy in a temporary directory (the checkpoint
    itself is only read)."""
    from transformers import AutoModelForCausalLM
    extra = {"max_memory": {(int(k) if str(k).isdigit() else k): v
                            for k, v in max_memory.items()}} if max_memory else {}
    with contextlib.ExitStack() as temp:  # a rewritten copy lives until the weights are loaded
        path, k, qc = _kernel(Path(path), device, kernel, allow_jit, temp)
        if qc is not None:
            extra["quantization_config"] = qc
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_torch_dtype(dtype), device_map=device_map or device, **extra)
    model.eval()
    model.qrecipe_kernel = k.name if k else None
    return model


def _kernel(path: Path, device: str, kernel: str, allow_jit: bool, temp: contextlib.ExitStack):
    """(directory to load, resolved kernel or None for a dense model, transformers'
    quantization_config or None). A `via` kernel's rewritten copy goes into a temporary
    directory that `temp` removes."""
    from qrecipe.kernels import hf_config as kernel_config
    from qrecipe.kernels import table as kernels
    fmt = kernels.checkpoint_format(path)
    if fmt not in kernels.KERNELS:
        return path, None, None
    saved = json.loads((path / "config.json").read_text())["quantization_config"]
    k = kernels.resolve(fmt, device, kernel, allow_jit, cc=_compute_capability(device),
                        **kernels.saved_facts(fmt, saved))
    if k.via:
        try:
            tmp = Path(temp.enter_context(tempfile.TemporaryDirectory(prefix="qrecipe-rewrite-")))
            path, fmt = _rewrite(path, k.via, tmp), k.via
            saved = json.loads((path / "config.json").read_text())["quantization_config"]
        except QRecipeError as e:
            if kernel != "auto":
                raise
            # what only the tensors show (3-D experts, odd shapes): the no-build kernel
            k = kernels.fallback(fmt)
            log.warning("reload: %s; using kernel %s", e, k.name)
    log.info("reload: %s checkpoint with kernel %s (%s)", fmt, k.name, k.note)
    return path, k, kernel_config.quantization_config(fmt, kernels.get(fmt, k.name), saved)


def _rewrite(src: Path, fmt: str, tmp: Path) -> Path:
    """src in the layout of `fmt`, written under tmp (qrecipe/kernels/ct_gptq.py: the only rewrite)."""
    import time

    from qrecipe.kernels import ct_gptq
    t0 = time.perf_counter()
    dst = ct_gptq.convert(src, tmp / "model")
    log.info("reload: rewrote %s into the %s layout in %.1fs (lossless)", src, fmt,
             time.perf_counter() - t0)
    return dst


def _compute_capability(device: str) -> Optional[float]:
    if device != "cuda":
        return None
    import torch
    major, minor = torch.cuda.get_device_capability()
    return major + minor / 10


def load_tokenizer(path: Path):
    from qrecipe.telemetry.overhead import timed_import
    with timed_import("transformers"):  # the import, not qrecipe's work (metrics `overhead`)
        from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)
