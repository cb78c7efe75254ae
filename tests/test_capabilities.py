"""One capability table (qrecipe/backends/capabilities.py): the adapters, validate and the
planner read it; the group-size rule is one function; the docs' rows are rendered from it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from qrecipe.backends import BACKENDS
from qrecipe.backends import capabilities as caps
from qrecipe.errors import QRecipeError


def test_every_adapter_supports_what_the_table_says():
    assert set(BACKENDS.names()) == set(caps.CAPABILITIES)
    for name in BACKENDS.names():
        assert BACKENDS.get(name).support is caps.CAPABILITIES[name]


def test_an_unknown_pair_names_the_backends_that_have_the_method():
    with pytest.raises(QRecipeError) as e:
        BACKENDS.get("bitsandbytes")().support_for("awq")
    assert str(e.value) == ("method.backend='bitsandbytes': backend bitsandbytes does not "
                            "implement method awq; allowed: for method awq: gptqmodel, "
                            "llmcompressor")


def test_group_size_rule():
    assert caps.undivided(-1, [576, 1536]) == []  # per channel divides everything
    assert caps.undivided(128, [576, 1536, 576]) == [576]
    assert caps.undivided(64, [576, 1536]) == []
    assert caps.dividing((-1, 32, 64, 128, 256), [576, 1536]) == [-1, 32, 64]
    assert caps.dividing((128, 64, 32), (100, 200)) == []


def test_planner_sizes_the_planned_pairs():
    from qrecipe.plan.estimate import METHODS
    assert METHODS["w4"] == [("gptq", "gptqmodel"), ("awq", "gptqmodel"), ("rtn", "gptqmodel"),
                             ("gptq", "llmcompressor"), ("awq", "llmcompressor"),
                             ("autoround", "llmcompressor"), ("hqq", "hqq")]
    assert METHODS["w8"] == [("gptq", "gptqmodel"), ("rtn", "gptqmodel"),
                             ("gptq", "llmcompressor"), ("awq", "llmcompressor"),
                             ("autoround", "llmcompressor"), ("hqq", "hqq")]
    assert METHODS["nf4"] == METHODS["int8"] == [("bnb", "bitsandbytes")]
    assert METHODS["fp16"] == METHODS["fp32"] == []
    # the schemes with a layout of their own are sized on their own rows, not on w8/w4
    for fmt in ("fp8", "w8a8", "nvfp4", "mxfp4"):
        assert METHODS[fmt] == [(fmt, "llmcompressor")]


def test_markdown_rows_cover_the_table_without_torch():
    """`qrecipe recipes --capabilities`: one row per method and backend, no torch imported."""
    code = ("import sys; from qrecipe.commands import recipes; recipes.main(['--capabilities']);"
            " print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[-1] == "False"
    rows = out[2:-1]
    assert out[:2] == caps.markdown_table()[:2] and rows == caps.markdown_table()[2:]
    assert len(rows) == sum(len(m) for m in caps.CAPABILITIES.values())
    assert "| awq | gptqmodel | 4 | 32, 64, 128 | yes | cpu, cuda | AWQ (AutoAWQ-compatible, " \
           "GEMM) |" in rows
    assert any(r.startswith("| bnb | bitsandbytes | 4, 8 | fixed by the library | no |")
               for r in rows)
