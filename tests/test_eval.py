"""The perplexity protocol: windows, scored tokens, and agreement with transformers' loss."""
from __future__ import annotations

import math

import pytest
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


class _Fixed(torch.nn.Module):
    """A model whose logits are given: what a degenerate or overflowing model returns."""

    def __init__(self, make):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.make = make

    def forward(self, ids):
        return type("Out", (), {"logits": self.make(ids)})()


def _rand(ids, dtype=torch.float32, vocab=50):
    g = torch.Generator().manual_seed(0)
    return torch.randn(*ids.shape, vocab, generator=g).to(dtype)


@pytest.mark.parametrize("make,problem", [
    (lambda ids: torch.full((*ids.shape, 50), float("nan")), "not finite"),
    (lambda ids: _rand(ids, torch.float16).index_fill_(-1, torch.tensor([3]), float("inf")),
     "overflow in float16"),
    (lambda ids: (_rand(ids) * 70000).clamp(-65504, 65504).half(),
     "saturate at float16's largest value (65504)"),
    (lambda ids: torch.zeros(*ids.shape, 50), "degenerate"),
])
def test_a_number_that_is_not_a_measurement_is_never_a_perplexity(make, problem):
    """NaN/inf or float16-saturated logits, a degenerate model: ppl None and why, never 65504."""
    ids = torch.randint(0, 50, (96,))
    res = perplexity(_Fixed(make), ids, ecfg(), "quantized")
    assert res["ppl"] is None and problem in res["ppl_problem"], res
    assert res["ppl_problem"].startswith("perplexity not")
    assert "quantized model" in res["ppl_problem"]


def test_healthy_logits_give_a_perplexity():
    res = perplexity(_Fixed(_rand), torch.randint(0, 50, (96,)), ecfg(), "fp")
    assert math.isfinite(res["ppl"]) and "ppl_problem" not in res


def test_a_saturated_or_overflowing_perplexity_is_flagged():
    from qrecipe.evaluation.perplexity import FP16_MAX, _checked_ppl
    assert _checked_ppl(math.log(37.45), None) == (pytest.approx(37.45), None)
    ppl, why = _checked_ppl(math.log(65504.21), None)  # the w2 sweep's "perplexity"
    assert ppl is None and "float16's largest value" in why and f"{FP16_MAX:.0f}" in why
    assert _checked_ppl(800.0, None)[0] is None  # exp overflows float64
    assert _checked_ppl(float("nan"), None)[1].startswith("perplexity not finite")


def test_a_graph_replay_that_is_not_the_eager_step_is_refused():
    """speed.py's CUDA-graph decode is used only where one replayed step returns the eager
    step's logits: a kernel launched outside the captured stream (gptqmodel 7.6's ExLlamaV2)
    leaves the graph replaying something else (NaN logits on an H100)."""
    from qrecipe.evaluation.speed import GRAPH_TOLERANCE, replay_differs
    want = torch.tensor([[1.0, -4.0, 2.5]])
    assert replay_differs(want.clone(), want) == ""
    assert replay_differs(want + GRAPH_TOLERANCE, want) == ""  # a quarter of the tolerance
    assert "differ from the eager step's" in replay_differs(want + 0.1, want)  # 2.5x
    assert "a kernel ran outside the capture" in replay_differs(torch.full_like(want, float("nan")),
                                                                want)


def test_the_eager_decode_loop_is_whole_where_no_graph_times_the_decode(tiny_model_dir):
    """On CPU the eager loop is the decode figure: every asked step, every repeat, the median
    step. Where a CUDA graph times the decode the eager loop is a side note of EAGER_SIDE_STEPS
    steps (tests/test_gpu.py checks that path)."""
    from transformers import AutoModelForCausalLM

    from qrecipe.evaluation import speed
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    n = speed.EAGER_SIDE_STEPS + 4
    out = speed.measure(model, torch.randint(0, 1000, (64,)), prompt_len=16, new_tokens=n,
                        repeats=2)
    assert out["decode_path"] == "eager" and out["eager_new_tokens"] == n
    assert out["eager_repeats"] == 2 and out["decode_tokens_per_s"] > 0
    assert out["decode_ms_per_step"] == pytest.approx(1000 / out["decode_tokens_per_s"])


@pytest.mark.parametrize("captured", [True, False])
def test_the_eager_loop_is_a_side_note_only_beside_a_graph_that_timed_the_decode(captured,
                                                                                 monkeypatch):
    """The graph is tried first: where it timed the decode, the eager figure is one short loop;
    where it was refused, the eager loop is the decode figure, with every step and repeat."""
    from types import SimpleNamespace

    from qrecipe.evaluation import speed
    loops = []

    class Graph:
        def __init__(self, model, prompt, n):
            if not captured:
                raise speed.GraphMismatch("a kernel ran outside the capture")

        def run(self):
            return 0.32  # 32 steps: 100 tok/s

    def eager(model, prompt, n, device=None):
        loops.append(n)
        return 0.05  # 20 tok/s

    monkeypatch.setattr(speed, "_GraphDecoder", Graph)
    monkeypatch.setattr(speed, "_decode_eager", eager)
    out = speed._decode(None, torch.zeros(1, 4), 32, SimpleNamespace(type="cuda"), True, 3)
    assert out["eager_decode_tokens_per_s"] == pytest.approx(20)
    if captured:
        assert loops == [speed.EAGER_SIDE_STEPS] and out["decode_path"] == "graph"
        assert out["decode_tokens_per_s"] == pytest.approx(100)
    else:
        assert loops == [32, 32, 32] and out["decode_path"] == "eager"
        assert out["decode_tokens_per_s"] == pytest.approx(20)
        assert "outside the capture" in out["graph_error"]
