"""Model sources: a hub id (pinned by revision), a local transformers directory, or a GGUF file
(also one shipped inside a Python package, named pkg://PACKAGE/FILE).

Two jobs: fingerprint a model's input weights, and materialize it as a plain transformers
directory that every backend can load (and load it: torch, imported where used). A GGUF model is
dequantized once into the cache and reused by every later run and sweep job. Its metadata (the
widths validation checks, `describe`) is read by qrecipe/inputs/shapes.py, without torch.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

from qrecipe import cuda
from qrecipe.boundary.modelfolder import check_model_folder
from qrecipe.errors import QRecipeError
from qrecipe.heap import release_free_memory
from qrecipe.inputs import gguf_tokenizer
from qrecipe.inputs.gguf_load import shared_reader
from qrecipe.inputs.shapes import (  # noqa: F401 (describe, ModelInfo: validate's names)
    ModelInfo,
    describe,
    hub_file,
    model_file,
)
from qrecipe.inputs.weights import PICKLE_SUFFIXES, check_model_dir, trusts_code
from qrecipe.kernels import ct_gptq, gptq_awq
from qrecipe.kernels import hf_config as kernel_config
from qrecipe.kernels import table as kernels
from qrecipe.kernels.hqq import FORMAT as HQQ_FORMAT
from qrecipe.kernels.hqq import load_hqq
from qrecipe.record.cache import seal_folder, verify_folder
from qrecipe.record.fingerprint import hash_files, sha256_text
from qrecipe.telemetry.overhead import timed_import

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16", "auto")


def fingerprint(cfg, stop=None) -> str:
    """sha256 naming the exact input weights. Hub models: the repo id and its resolved commit
    (a content hash kept by the hub); files on disk: their bytes (`stop`: see
    fingerprint.Background)."""
    if cfg.source == "hub":
        from huggingface_hub import HfApi
        try:
            sha = HfApi().model_info(cfg.path, revision=cfg.revision).sha
        except Exception:  # offline but cached: the snapshot's folder name is the commit
            sha = Path(hub_file(cfg.path, cfg.revision, "config.json")).parent.name
        return sha256_text(f"hub:{cfg.path}@{sha}")
    p = model_file(cfg.source, cfg.path)
    if cfg.source == "gguf":
        return hash_files([p], stop)
    files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".json"))
    return hash_files(files, stop)


def materialize(cfg, cache_dir: Path, model_fp) -> Path:
    """A plain transformers directory (weights + tokenizer) of the unquantized model. model_fp()
    gives the input's fingerprint (called for a GGUF model only: it names the cached copy).
    The directory returned is the one the backend's library loads: it passes the model-folder
    check here (qrecipe/boundary/modelfolder.py), at load time, whatever validation saw."""
    trust = trusts_code(cfg)
    if cfg.source == "local":
        path = model_file(cfg.source, cfg.path)
        check_model_folder(path, trust)
        return path
    if cfg.source == "hub":
        from huggingface_hub import snapshot_download
        allow_pickle = bool(cfg.get("allow_pickle", False))
        # Loading safety: pickle checkpoints are not even downloaded without the opt-in.
        patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
        patterns += [f"*{s}" for s in PICKLE_SUFFIXES] if allow_pickle else []
        snap = Path(snapshot_download(cfg.path, revision=cfg.revision, allow_patterns=patterns))
        check_model_folder(snap, trust)  # no *.py is fetched, but config.json may name code
        check_model_dir(snap, allow_pickle)
        return snap
    # a Gemma GGUF's copy holds qrecipe's rebuilt tokenizer: named apart from older copies
    suffix = "" if cfg.tokenizer else gguf_tokenizer.cache_suffix(model_file(cfg.source, cfg.path))
    dest = cache_dir / "models" / (model_fp()[:16] + suffix)
    if (dest / "config.json").is_file() and verify_folder(dest):
        log.info("model: reusing dequantized GGUF at %s", dest)
    else:
        _set_aside(dest)  # planted, changed or half-written: made again, never used
        _dequantize(cfg, dest)
    # qrecipe writes no code into its copy: code here was put there by someone else (or came
    # with another job's copy), and gptqmodel would import it.
    check_model_folder(dest, trust, key="cache.dir", hint=_CACHE_HINT.format(dest=dest))
    return dest


_CACHE_HINT = ("a dequantized GGUF holds no code: remove {dest} (qrecipe makes it again), or "
               "pass trust_remote_code=true on the command line if you trust this folder's code")


def _set_aside(dest: Path) -> None:
    """Remove a cache entry that does not verify: renamed first, so a concurrent job never
    reads a half-deleted folder."""
    if not os.path.lexists(dest):
        return
    gone = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    os.rename(dest, gone / "entry")
    shutil.rmtree(gone, ignore_errors=True)


def _dequantize(cfg, dest: Path) -> None:
    """The GGUF model as float32 safetensors and its tokenizer, written into `dest` (once)."""
    src = model_file(cfg.source, cfg.path)
    log.info("model: dequantizing %s into %s (once; later runs reuse it)", src.name, dest)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with shared_reader():  # one fast reader, not one per transformers call (gguf_load.py)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name,
                                                     dtype=_torch_dtype("float32"))
        if not cfg.tokenizer and gguf_tokenizer.rebuilds(src):  # transformers' is wrong
            tok = gguf_tokenizer.build(src)
        else:
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
    # The job goes on in this process: the dequantized copy it no longer holds would stay in
    # its RSS (SmolLM2's nf4 job peaked at 1.64 GB on the run that dequantized, 1.35 GB with
    # this; the next run 1.25-1.44 GB).
    del model, tok
    release_free_memory(collect=True)
    seal_folder(tmp, dest.name)  # inside the folder: the seal moves with the rename
    try:
        os.rename(tmp, dest)
    except OSError:  # another job won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)


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
    itself is only read). An HQQ checkpoint loads through hqq's own layers
    (qrecipe/kernels/hqq.py): transformers 5.17 cannot reload one, and a plain from_pretrained
    would give its quantized layers random weights."""
    if kernels.checkpoint_format(Path(path)) == HQQ_FORMAT:
        model = load_hqq(Path(path), dtype, device,
                         kernels.resolve(HQQ_FORMAT, device, kernel, allow_jit).name)
        model.qrecipe_kernel_measured = []
        return model
    from transformers import AutoModelForCausalLM
    extra = {"max_memory": {(int(k) if str(k).isdigit() else k): v
                            for k, v in max_memory.items()}} if max_memory else {}
    with contextlib.ExitStack() as temp:  # a rewritten copy lives until the weights are loaded
        path, k, qc, alternatives = _kernel(Path(path), device, kernel, allow_jit, temp, dtype)
        if qc is not None:
            extra["quantization_config"] = qc
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_torch_dtype(dtype), device_map=device_map or device, **extra)
    model.eval()
    model.qrecipe_kernel = k.name if k else None
    model.qrecipe_kernel_measured = alternatives  # what auto ranked by (kernels/measured.py)
    # what from_pretrained leaves undone for this kernel (dense layers, FP4 dtypes), so every
    # caller gets the model the kernel stands for
    kernel_config.finish_load(model)
    return model


def _kernel(path: Path, device: str, kernel: str, allow_jit: bool, temp: contextlib.ExitStack,
            dtype: str = "auto"):
    """(directory to load, resolved kernel or None for a dense model, transformers'
    quantization_config or None, the measured kernels of this checkpoint's kind on the nearest
    measured GPU). A `via` kernel's rewritten copy goes into a temporary directory that `temp`
    removes."""
    fmt = kernels.checkpoint_format(path)
    if fmt not in kernels.KERNELS:
        return path, None, None, []
    saved = json.loads((path / "config.json").read_text())["quantization_config"]
    facts, cc = kernels.saved_facts(fmt, saved), _compute_capability(device)
    # dtype: the load's ("auto": the checkpoint's), which a kernel must run in and whose
    # measurements rank
    k = kernels.resolve(fmt, device, kernel, allow_jit, cc=cc, dtype=dtype, **facts)
    alternatives = kernels.measured_alternatives(fmt, device, cc, dtype, facts)
    runs = k
    if k.via:
        try:
            tmp = Path(temp.enter_context(tempfile.TemporaryDirectory(prefix="qrecipe-rewrite-")))
            path = _rewrite(path, fmt, k.via, tmp, device)
            fmt, runs = kernels.loads_as(fmt, k)
            saved = json.loads((path / "config.json").read_text())["quantization_config"]
        except QRecipeError as e:
            if kernel != "auto":
                raise
            # what only the tensors show (3-D experts, odd shapes): the no-build kernel
            k = runs = kernels.fallback(fmt)
            log.warning("reload: %s; using kernel %s", e, k.name)
    log.info("reload: %s checkpoint with kernel %s (%s)", fmt, k.name, k.note)
    return path, k, kernel_config.quantization_config(fmt, runs, saved), alternatives


def _rewrite(src: Path, fmt: str, via: str, tmp: Path, device: str) -> Path:
    """src (a `fmt` checkpoint) in the layout of `via`, written under tmp: compressed-tensors
    into GPTQ's (qrecipe/kernels/ct_gptq.py), GPTQ or compressed-tensors into AWQ's
    (qrecipe/kernels/gptq_awq.py, repacked on the load's device)."""
    t0 = time.perf_counter()
    if via == "awq":
        on = "cuda" if str(device).startswith("cuda") else "cpu"
        dst = gptq_awq.convert(src, tmp / "model", on)
    else:
        dst = ct_gptq.convert(src, tmp / "model")
    log.info("reload: rewrote the %s checkpoint %s into the %s layout in %.1fs (lossless)", fmt,
             src, via, time.perf_counter() - t0)
    return dst


def _compute_capability(device: str) -> Optional[float]:
    if device != "cuda":
        return None
    import torch  # noqa: F401  deferred: torch; cuda.capability asks the imported one
    return cuda.capability()


def load_tokenizer(path: Path):
    with timed_import("transformers"):  # the import, not qrecipe's work (metrics `overhead`)
        from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)
