"""Calibration that matches the use case: chat jsonl (OpenAI `messages`) through the tokenizer's
chat template, weighted mixes of sources, and a fingerprint that covers all of it."""
from __future__ import annotations

import json

import pytest
from conftest import JARGON, run_cli
from omegaconf import OmegaConf

from qrecipe.errors import QRecipeError
from qrecipe.inputs import calibration
from qrecipe.record.cache import Cache

TOPICS = ["quantization", "calibration", "perplexity", "tokenizers", "group size", "GPUs"]


def write_chats(path, n=40, changed=None):
    with open(path, "w") as f:
        for i in range(n):
            q = f"Question {i}: what should I know about {TOPICS[i % len(TOPICS)]}?"
            a = (f"Answer {i}: " + "It depends on the model, the data and the hardware. " * 3)
            if changed == i:
                a += " One more sentence."
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}]}) + "\n")
    return path


def calib(path, **kw):
    base = {"source": "local", "path": str(path), "name": None, "split": "train",
            "text_field": "text", "messages_field": "messages", "num_samples": 10,
            "seq_len": 32, "seed": 0, "mix": []}
    return OmegaConf.create({**base, **kw})


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from qrecipe.inputs import models
    t = models.load_tokenizer(tiny_model_dir)
    assert t.chat_template  # SmolLM2's tokenizer carries one
    return t


def build(c, tok, tmp_path):
    return calibration.build(c, tok, "tok-fp", Cache(tmp_path / "cache"))


def test_chat_jsonl_goes_through_the_chat_template(tok, tmp_path):
    rows, fp = build(calib(write_chats(tmp_path / "c.jsonl")), tok, tmp_path)
    assert len(rows) == 10 and all(r.numel() == 32 for r in rows)
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert any((r == im_start).any() for r in rows)  # special tokens, not their spelling
    assert fp["sources"][0]["source"].endswith("c.jsonl")


def test_one_changed_message_changes_the_fingerprint(tok, tmp_path):
    _, a = build(calib(write_chats(tmp_path / "a.jsonl")), tok, tmp_path)
    _, b = build(calib(write_chats(tmp_path / "b.jsonl", changed=17)), tok, tmp_path)
    assert a["sources"][0]["text_token_ids_sha256"] != b["sources"][0]["text_token_ids_sha256"]
    _, a2 = build(calib(write_chats(tmp_path / "a2.jsonl")), tok, tmp_path)
    assert a2["sources"][0]["text_token_ids_sha256"] == a["sources"][0]["text_token_ids_sha256"]
    assert a2["token_ids_sha256"] == a["token_ids_sha256"]


def test_mix_splits_rows_by_weight_and_records_every_source(tok, tmp_path):
    chats = write_chats(tmp_path / "c.jsonl")
    mix = [{"path": str(chats), "weight": 0.7}, {"path": str(JARGON), "weight": 0.3}]
    rows, fp = build(calib(chats, mix=mix), tok, tmp_path)
    assert len(rows) == 10 and [s["rows"] for s in fp["sources"]] == [7, 3]
    assert [s["weight"] for s in fp["sources"]] == [0.7, 0.3]
    _, other = build(calib(chats, mix=[{**mix[0], "weight": 0.5}, {**mix[1], "weight": 0.5}]),
                     tok, tmp_path)
    assert other["token_ids_sha256"] != fp["token_ids_sha256"]


def test_split_counts():
    assert calibration.split_counts([0.7, 0.3], 10) == [7, 3]
    assert calibration.split_counts([1, 1, 1], 4) == [2, 1, 1]
    assert calibration.split_counts([0.99, 0.01], 3) == [2, 1]  # every source gets a row
    assert sum(calibration.split_counts([3, 5, 7], 128)) == 128


def test_mix_errors_name_the_entry(tmp_path):
    with pytest.raises(QRecipeError, match=r"calibration.mix\[1\].weight"):
        calibration.check(calib(JARGON, mix=[{"weight": 1}, {"weight": 0}]))
    with pytest.raises(QRecipeError, match=r"calibration.mix\[0\]"):
        calibration.check(calib(JARGON, mix=[{"wieght": 1}]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": "hello"}) + "\n")
    with pytest.raises(QRecipeError, match="messages"):
        calibration.build(calib(bad), None, "t", Cache(tmp_path / "c"))


@pytest.mark.e2e
def test_chat_calibration_end_to_end_on_tiny_model(tiny_model_dir, tmp_path):
    chats = write_chats(tmp_path / "chats.jsonl", n=60)
    out = tmp_path / "run"
    p = run_cli(["method=gptq", "model=local", f"model.path={tiny_model_dir}", "bits=w4",
                 "bits.group_size=32", "calibration=local", f"calibration.path={chats}",
                 "calibration.num_samples=8", "calibration.seq_len=64",
                 f"calibration.mix=[{{path: '{chats}', weight: 0.7}}, "
                 f"{{path: '{JARGON}', weight: 0.3}}]",
                 "eval.max_windows=1", "eval.seq_len=64", "eval.stride=64", "eval.speed=false",
                 f"hydra.run.dir={out}"])
    assert p.returncode == 0, p.stderr[-4000:]
    assert (out / "manifest.json").is_file()
    fp = json.loads((out / "fingerprints.json").read_text())["calibration"]
    assert [s["rows"] for s in fp["sources"]] == [6, 2]  # 70/30 of 8, largest remainder
    assert fp["sources"][0]["source"].endswith("chats.jsonl") and fp["rows"] == 8
