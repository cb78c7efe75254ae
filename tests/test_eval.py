"""The perplexity protocol: windows, scored tokens, and agreement with transformers' loss."""
from __future__ import annotations

import math

import torch
from omegaconf import OmegaConf

from qrecipe.evaluation.perplexity import (
    _scored_tokens,
    _window_starts,
    perplexity,
    protocol,
)


def ecfg(**kw):
    base = dict(seq_len=32, stride=32, max_windows=None, batch_size=2)
    base.update(kw)
    return OmegaConf.create(base)


def test_windows_and_scored_tokens():
    assert _window_starts(100, 32, 32, None) == [0, 32, 64]
    assert _window_starts(100, 32, 16, 2) == [0, 16]
    assert _scored_tokens([0, 32, 64], 32, 32) == 3 * 31
    assert _scored_tokens([0, 16, 32], 32, 16) == 31 + 2 * 16
    p = protocol(ecfg(), "x", "fp", 100)
    assert p["windows"] == 3 and p["scored_tokens"] == 93


def test_perplexity_matches_transformers_loss(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, 1000, (96,))
    res = perplexity(model, ids, ecfg(), "t")
    with torch.no_grad():
        losses = [model(ids[s:s + 32][None], labels=ids[s:s + 32][None]).loss.item()
                  for s in (0, 32, 64)]
    assert res["tokens"] == 93
    assert math.isclose(res["ppl"], math.exp(sum(losses) / 3), rel_tol=1e-4)


def test_overlapping_stride_scores_each_token_once(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, 1000, (64,))
    res = perplexity(model, ids, ecfg(stride=16, batch_size=1), "t")
    assert res["tokens"] == _scored_tokens(_window_starts(64, 32, 16, None), 32, 16) == 63
