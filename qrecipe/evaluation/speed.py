"""Prefill and decode speed, measured honestly: device-synchronized, warmed up, median of repeats,
and decode timed as its own loop (one token per step over a KV cache, the prefill that fills the
cache not counted), not as generate() minus a separate prefill. On CPU each step is timed on its
own and the median step gives tokens/s: a step slowed by another process on the machine does not
move it (a loop total minus a separately timed prefill gave decode speeds off by 10x, and
negative times, on a busy 2-core machine).

Two decode paths:
- "eager": model(token, past_key_values=DynamicCache) per step: what generate() does; on a GPU
  at batch 1 this is bound by Python and kernel-launch overhead (hundreds of small launches per
  token), not by reading the weights.
- "graph": a StaticCache and the one-token step captured once in a CUDA graph and replayed: no
  Python and no launch gaps per token. Used when the device is CUDA, the capture works (a
  kernel that syncs with the host cannot be captured) and one replayed step returns the eager
  step's logits (a kernel launched outside the captured stream is missing from the graph);
  otherwise "eager" is reported, with the reason (`graph_error`).
"""
from __future__ import annotations

import logging
import statistics
import time
from typing import Any, Dict

log = logging.getLogger(__name__)


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


EAGER_SIDE_STEPS = 8  # the eager loop's steps where a CUDA graph times the decode


def measure(model, ids, prompt_len: int = 128, new_tokens: int = 32, batch: int = 1,
            graphs: bool = True, repeats: int = 3) -> Dict[str, Any]:
    """Prefill tokens/s (batch x prompt_len in one forward) and decode tokens/s (batch x
    new_tokens single-token steps over the cache), greedy."""
    import torch

    device = next(model.parameters()).device
    prompt = ids[:prompt_len].unsqueeze(0).repeat(batch, 1).to(device)
    out: Dict[str, Any] = {"batch": batch, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
                           "device": device.type, "repeats": repeats}
    with torch.inference_mode():
        prefill = _timed(lambda: model(prompt, use_cache=False), device, repeats)
        out["prefill_tokens_per_s"] = batch * prompt_len / prefill
        _decode_eager(model, prompt, 2)  # warm-up
        out.update(_decode(model, prompt, new_tokens, device, graphs, repeats))
    out["decode_ms_per_step"] = 1000 * batch / out["decode_tokens_per_s"]
    return out


def _decode(model, prompt, new_tokens: int, device, graphs: bool, repeats: int
            ) -> Dict[str, Any]:
    """Decode tokens/s: the CUDA graph's where it is captured and replays the eager step, else
    the eager loop's (`repeats` loops of new_tokens steps). Beside a graph's figure the eager
    one is a side note of one loop of EAGER_SIDE_STEPS steps. A 7B decodes eagerly at 11-21
    tok/s on an H100 (Python and launches), so three loops of 32 steps were 4.5 s of every
    job's evaluation, one loop of 32 still 5.2 s of a cold job's (fp 14.5 and torch kernel
    10.7 tok/s: the goals run of 2026-12-07 21:14 UTC, docs/benchmarks.md). On a GPU every
    step costs the same (the cache grows from 128 to 160 tokens), so the mean needs few."""
    batch, out = prompt.shape[0], {}
    if graphs and device.type == "cuda":
        try:
            graph = _GraphDecoder(model, prompt, new_tokens)
            g = statistics.median(graph.run() for _ in range(repeats))
            out["graph_decode_tokens_per_s"] = batch * new_tokens / g
        except Exception as e:  # capture refused (host sync inside a kernel, ...)
            out["graph_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            log.info("speed: CUDA graph decode unavailable: %s", out["graph_error"])
    graphed = "graph_decode_tokens_per_s" in out
    out["eager_repeats"] = 1 if graphed else repeats
    out["eager_new_tokens"] = min(new_tokens, EAGER_SIDE_STEPS) if graphed else new_tokens
    step = statistics.median(_decode_eager(model, prompt, out["eager_new_tokens"], device)
                             for _ in range(out["eager_repeats"]))
    out["eager_decode_tokens_per_s"] = batch / step
    out["decode_tokens_per_s"], out["decode_path"] = (
        (out["graph_decode_tokens_per_s"], "graph") if graphed
        else (out["eager_decode_tokens_per_s"], "eager"))
    return out


def _decode_eager(model, prompt, new_tokens: int, device=None) -> float:
    """Seconds per decode step after a prefill: the median step on CPU, the loop's mean
    (device-synchronized at both ends) elsewhere."""
    from transformers import DynamicCache
    cache = DynamicCache()
    o = model(prompt, past_key_values=cache, use_cache=True)
    tok = o.logits[:, -1:].argmax(-1)
    if device is not None:
        _sync(device)
    steps, t0 = [], time.perf_counter()
    for _ in range(new_tokens):
        t = time.perf_counter()
        o = model(tok, past_key_values=cache, use_cache=True)
        tok = o.logits[:, -1:].argmax(-1)
        steps.append(time.perf_counter() - t)
    if device is not None and device.type != "cpu":
        _sync(device)
        return (time.perf_counter() - t0) / new_tokens
    return statistics.median(steps)


# How far the replayed step's logits may be from the eager step's, relative to their largest:
# the same kernels on the same inputs (gptqmodel's torch kernel: identical on an H100); room for
# a kernel that reduces with atomics in another order, far below a step missing its GEMMs.
GRAPH_TOLERANCE = 1e-2


class GraphMismatch(RuntimeError):
    """The captured step does not compute what the eager step does."""


def replay_differs(got, want) -> str:
    """Why the replayed step's logits (got) are not the eager step's (want); "" when they are."""
    gap = float((got - want).abs().max())
    if gap <= GRAPH_TOLERANCE * float(want.abs().max()):  # NaN is never <=
        return ""
    return (f"the replayed step's logits differ from the eager step's (max {gap:.3g}): a "
            "kernel ran outside the capture")


class _GraphDecoder:
    """StaticCache + one captured CUDA graph of the single-token step. run() prefills eagerly
    and replays the graph new_tokens times (the caller subtracts the prefill)."""

    def __init__(self, model, prompt, new_tokens: int):
        import torch
        from transformers import StaticCache

        self.model, self.prompt, self.n = model, prompt, new_tokens
        b, p = prompt.shape
        self.cache = StaticCache(config=model.config, max_cache_len=p + new_tokens + 1)
        self.tok = torch.zeros((b, 1), dtype=torch.long, device=prompt.device)
        self.pos = torch.zeros((1,), dtype=torch.long, device=prompt.device)
        self._prefill()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm the step outside the graph (lazy inits, autotune)
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        prev = torch.cuda.current_stream()
        try:
            with torch.cuda.graph(self.graph):
                self.logits = self._step()
        finally:
            # A failed capture leaves torch.cuda.graph's side stream current (its __exit__ skips
            # the restore when capture_end raises; seen on an H100): every later op of the
            # process then runs there, racing kernels that launch on the legacy default stream.
            torch.cuda.set_stream(prev)
        self._check()

    def _check(self) -> None:
        """The replayed step against the same step run eagerly. A kernel launched outside the
        captured stream is left out of the graph, whose replays then return and time something
        else: gptqmodel 7.6's ExLlamaV2 launches on the legacy default stream, and its replayed
        step gave NaN logits, its replays 1.4x the torch kernel's real graph (an H100, a 2-layer
        model)."""
        import torch
        self._prefill()
        self.graph.replay()
        got = self.logits.float().clone()
        self._prefill()
        why = replay_differs(got, self._step().float())
        if why:
            raise GraphMismatch(why)
        torch.cuda.synchronize()

    def _step(self):
        o = self.model(self.tok, past_key_values=self.cache, cache_position=self.pos,
                       use_cache=True)
        return o.logits[:, -1:]

    def _prefill(self) -> None:
        import torch
        self.cache.reset()
        p = self.prompt.shape[1]
        o = self.model(self.prompt, past_key_values=self.cache, use_cache=True,
                       cache_position=torch.arange(p, device=self.prompt.device))
        self.tok.copy_(o.logits[:, -1:].argmax(-1))
        self.pos.fill_(p)

    def run(self) -> float:
        """Seconds of the replayed decode loop (the prefill before it not counted)."""
        import torch
        self._prefill()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(self.n):
            self.graph.replay()
            self.tok.copy_(self.logits.argmax(-1))
            self.pos.add_(1)
        torch.cuda.synchronize()
        return time.perf_counter() - t0
