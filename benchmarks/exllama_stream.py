"""gptqmodel 7.6's ExLlamaV2 (GPTQ) built from a copy of its sources whose kernels launch on the
current CUDA stream, for benchmarks/kernel_speed.py --exllama-current-stream.

Why: its seven kernel launches (`kernel<<<gridDim, blockDim>>>` in cuda/q_gemm.cu and
cuda/q_matrix.cu) name no stream, so they run on the legacy default stream. A CUDA graph captured
on another stream leaves them out (its replayed decode step gave NaN logits on an H100:
docs/benchmarks.md, "the 32-layer 7B shape in one run"), and after anything leaves a side
stream current they race the cuBLAS GEMM that runs on it. With the stream named, the graph
check of qrecipe/evaluation/speed.py tells whether the copy captures, and the table what it
decodes at. qrecipe itself builds the library's own sources; this is a measurement.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import List

LAUNCH = re.compile(r"<<<\s*gridDim\s*,\s*blockDim\s*>>>")
STREAM = "<<<gridDim, blockDim, 0, at::cuda::getCurrentCUDAStream()>>>"
INCLUDE = "#include <ATen/cuda/CUDAContext.h>\n"
PATCHED = ("cuda/q_gemm.cu", "cuda/q_matrix.cu")
SOURCES = ("ext_gptq.cpp", "cuda/q_matrix.cu", "cuda/q_gemm.cu")  # gptqmodel's list, its order


def original_root() -> Path:
    import importlib.util
    spec = importlib.util.find_spec("gptqmodel_ext")
    return Path(spec.origin).parent / "exllamav2"


def patch_sources(dst: Path, src: Path | None = None) -> List[str]:
    """Copy the ExLlamaV2 sources into dst and name the current stream in every launch; the
    source list gptqmodel builds, in dst. Raises where a launch was not found."""
    src = Path(src) if src else original_root()
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for rel in PATCHED:
        p = dst / rel
        text, n = LAUNCH.subn(STREAM, p.read_text())
        if n == 0:
            raise RuntimeError(f"no stream-less launch in {rel}: gptqmodel's sources changed")
        p.write_text(INCLUDE + text)
    return [str(dst / s) for s in SOURCES]


def use_patched(dst: Path) -> List[str]:
    """Before the first ExLlamaV2 load of this process: gptqmodel builds and loads the patched
    copy, into its own build root (never the cached build of the original sources)."""
    from gptqmodel.utils import exllamav2
    sources = patch_sources(Path(dst) / "src")
    ext = exllamav2._EXLLAMAV2_GPTQ_TORCH_OPS_EXTENSION
    ext.sources = lambda: sources
    os.environ[ext.build_root_env] = str(Path(dst) / "build")
    return sources
