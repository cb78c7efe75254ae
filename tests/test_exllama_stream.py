"""benchmarks/exllama_stream.py: the copy of gptqmodel 7.6's ExLlamaV2 sources whose kernels
launch on the current CUDA stream (kernel_speed.py --exllama-current-stream measures it on a
GPU). Here: every launch of the installed sources names the stream, and gptqmodel is pointed at
the copy and a build root of its own."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import exllama_stream as es  # noqa: E402

LAUNCHES = re.compile(r"<<<[^<>]*>>>")


def test_every_launch_of_the_copy_names_the_current_stream(tmp_path):
    src = es.original_root()
    before = {rel: LAUNCHES.findall((src / rel).read_text()) for rel in es.PATCHED}
    assert sum(map(len, before.values())) == 7  # gptqmodel 7.6: 3 in q_gemm.cu, 4 in q_matrix.cu
    sources = es.patch_sources(tmp_path / "copy")
    assert [Path(s).relative_to(tmp_path / "copy").as_posix() for s in sources] == \
        list(es.SOURCES)
    for rel in es.PATCHED:
        text = (tmp_path / "copy" / rel).read_text()
        assert text.startswith(es.INCLUDE)
        launches = LAUNCHES.findall(text)
        assert len(launches) == len(before[rel])
        assert all("at::cuda::getCurrentCUDAStream()" in x for x in launches), launches
    # the other files are the library's own bytes
    assert (tmp_path / "copy" / "ext_gptq.cpp").read_bytes() == \
        (src / "ext_gptq.cpp").read_bytes()
    assert (src / "cuda" / "q_gemm.cu").read_text().count("getCurrentCUDAStream") == 0


def test_gptqmodel_builds_the_copy_into_its_own_root(tmp_path, monkeypatch):
    from gptqmodel.utils import exllamav2
    ext = exllamav2._EXLLAMAV2_GPTQ_TORCH_OPS_EXTENSION
    monkeypatch.setattr(ext, "sources", ext.sources)  # restored after the test
    monkeypatch.delenv(ext.build_root_env, raising=False)
    sources = es.use_patched(tmp_path / "x")
    assert ext.sources() == sources and all(Path(s).is_file() for s in sources)
    assert os.environ[ext.build_root_env] == str(tmp_path / "x" / "build")
    monkeypatch.delenv(ext.build_root_env)


def test_a_launch_gone_from_the_sources_is_refused(tmp_path):
    fake = tmp_path / "src"
    (fake / "cuda").mkdir(parents=True)
    for rel in es.SOURCES:
        (fake / rel).write_text("// no launch here\n")
    with pytest.raises(RuntimeError, match="gptqmodel's sources changed"):
        es.patch_sources(tmp_path / "copy", src=fake)
