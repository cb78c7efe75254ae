"""Text sources, deterministic calibration sampling and token fingerprints."""
from __future__ import annotations

import json

import pytest
import torch

from qrecipe.errors import QRecipeError
from qrecipe.inputs.texts import (
    TextSpec,
    calibration_rows,
    load_text,
    rows_fingerprint,
    token_ids,
)
from qrecipe.record.cache import Cache


def spec(source, path=None, field="text"):
    return TextSpec("calibration", source, str(path) if path else None, None, "train", field)


def test_pydoc_is_always_there():
    text = load_text(spec("pydoc"))
    assert len(text) > 300_000 and "assert" in text


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "json", "parquet"])
def test_local_formats_give_the_same_text(tmp_path, fmt):
    rows = ["first row", "second row", "third"]
    p = tmp_path / f"d.{fmt}"
    if fmt == "txt":
        p.write_text("\n\n".join(rows))
    elif fmt == "jsonl":
        p.write_text("\n".join(json.dumps({"text": r, "id": i}) for i, r in enumerate(rows)))
    elif fmt == "json":
        p.write_text(json.dumps([{"text": r} for r in rows]))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"text": rows}), p)
    assert load_text(spec("local", p)) == "first row\n\nsecond row\n\nthird"


def test_text_field_is_chosen(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"body": "a"}\n{"body": "b"}\n')
    assert load_text(spec("local", p, field="body")) == "a\n\nb"


def test_hub_source_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = TextSpec("calibration", "hub", "surely/not-a-dataset", None, "train", "text")
    with pytest.raises(QRecipeError, match="cannot load hub dataset"):
        load_text(s)


def test_sampling_is_deterministic_and_seed_dependent():
    ids = torch.arange(10_000)
    a = calibration_rows(ids, 8, 64, seed=0)
    b = calibration_rows(ids, 8, 64, seed=0)
    c = calibration_rows(ids, 8, 64, seed=1)
    assert rows_fingerprint(a) == rows_fingerprint(b) != rows_fingerprint(c)
    assert all(r.shape == (64,) for r in a)
    # windows are contiguous slices of the stream
    assert all(torch.equal(r, torch.arange(int(r[0]), int(r[0]) + 64)) for r in a)


def test_too_short_text_is_rejected():
    with pytest.raises(QRecipeError, match="too short"):
        calibration_rows(torch.arange(100), 4, 512, seed=0)


def test_token_ids_are_cached(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cache = Cache(tmp_path)
    s = spec("pydoc")
    first = token_ids(s, tok, "tokfp", cache)
    assert cache.hits == []
    second = token_ids(s, tok, "tokfp", cache)
    assert torch.equal(first, second) and len(cache.hits) == 1
    assert first.numel() > 50_000


def test_the_backend_imports_while_the_text_is_tokenized(tmp_path, tiny_model_dir):
    """A text the cache lacks is tokenized on another thread while `meanwhile` (the runner: the
    backend library's import) runs on this one: the tokenizer here waits for `meanwhile` to
    start, which only overlapping calls get past. A cached text calls nothing."""
    import threading

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    started, calls = threading.Event(), []

    def tokenizer(text, **kw):
        assert started.wait(10), "the tokenizer ran before meanwhile, not beside it"
        calls.append(threading.current_thread().name)
        return tok(text, **kw)

    cache = Cache(tmp_path)
    ids = token_ids(spec("pydoc"), tokenizer, "tokfp", cache, meanwhile=started.set)
    assert calls == ["qrecipe-tokenize"]
    assert torch.equal(ids, token_ids(spec("pydoc"), tok, "tokfp", Cache(tmp_path / "b")))
    again = []
    token_ids(spec("pydoc"), tokenizer, "tokfp", cache, meanwhile=lambda: again.append(1))
    assert again == [] and len(calls) == 1


def test_a_failing_tokenizer_fails_after_meanwhile(tmp_path):
    """The tokenizing thread's error is raised in the caller, once meanwhile has returned."""
    order = []

    def tokenizer(text, **kw):
        raise ValueError("bad tokenizer")

    with pytest.raises(ValueError, match="bad tokenizer"):
        token_ids(spec("pydoc"), tokenizer, "tokfp", Cache(tmp_path),
                  meanwhile=lambda: order.append("meanwhile"))
    assert order == ["meanwhile"]
