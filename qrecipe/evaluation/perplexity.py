"""Perplexity with a fixed, recorded protocol; generation speed; memory footprint.

Protocol (recorded verbatim in metrics.json): the eval text is tokenized whole without special
tokens, cut into windows of `seq_len` tokens starting every `stride` tokens, the first
`max_windows` windows are scored, and perplexity is exp(mean next-token NLL) over every scored
token. A model whose tokenizer starts every text with a BOS token (window_bos: Gemma, Llama) gets
one before every window, which then predicts the window's first token (bos_token_id recorded).
With stride == seq_len each token is predicted once, with no context from the previous window:
the GPTQ/AWQ papers' WikiText-2 protocol.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, Optional, Tuple

from qrecipe.errors import QRecipeError
from qrecipe.evaluation.speed import measure
from qrecipe.telemetry.terminal import progress

log = logging.getLogger(__name__)


def protocol(eval_cfg, spec_desc: str, ids_fp: str, n_tokens: int,
             bos: Optional[int] = None) -> Dict[str, Any]:
    """`bos`: window_bos(tokenizer), recorded as bos_token_id (None: windows are text only)."""
    windows = _window_starts(n_tokens, eval_cfg.seq_len, eval_cfg.stride, eval_cfg.max_windows)
    paper = paper_protocol(eval_cfg, spec_desc, windows)
    return {"dataset": spec_desc, "seq_len": eval_cfg.seq_len, "stride": eval_cfg.stride,
            "windows": len(windows), "text_tokens": n_tokens,
            "scored_tokens": _scored_tokens(windows, eval_cfg.seq_len, eval_cfg.stride,
                                            bos is not None),
            "token_ids_sha256": ids_fp, "bos_token_id": bos,
            "paper_protocol": paper and (paper if bos is None else paper + BOS_NOTE)}


# Models trained with a BOS token first (Gemma, Llama) are scored with one before every window
# (the rule: qrecipe/inputs/texts.py, window_bos); a model whose tokenizer adds none (SmolLM2) is
# scored on text only, as before.
BOS_NOTE = (" A BOS token starts every window (the papers' code put one before the first "
            "window only).")


# The GPTQ / AWQ papers' WikiText-2 perplexity: wikitext-2-raw-v1 test joined by "\n\n", windows
# of 2048 tokens, stride 2048, every window of the test set. Recorded (and flagged in report.md)
# only when this run's protocol is exactly that one.
PAPER_SEQ_LEN = 2048


def paper_protocol(eval_cfg, spec_desc: str, windows) -> str | None:
    wikitext = ("wikitext2_raw_test.txt" in spec_desc
                or spec_desc.startswith("hub:wikitext/wikitext-2-raw-v1/test"))
    if (wikitext and eval_cfg.seq_len == PAPER_SEQ_LEN and eval_cfg.stride == PAPER_SEQ_LEN
            and not eval_cfg.max_windows):
        return (f"GPTQ/AWQ papers' WikiText-2 protocol (seq {PAPER_SEQ_LEN}, full test set, "
                f"stride {PAPER_SEQ_LEN}, {len(windows)} windows): comparable with their tables.")
    return None


def _window_starts(n: int, seq_len: int, stride: int, max_windows):
    starts = list(range(0, max(n - seq_len, 0) + 1, stride))
    return starts[:max_windows] if max_windows else starts


def _scored_tokens(starts, seq_len: int, stride: int, bos: bool = False) -> int:
    # The first window scores seq_len-1 tokens (seq_len after a BOS, which predicts the first);
    # an overlapping later window scores only the tokens past the previous window's end (the
    # others only serve as context).
    if not starts:
        return 0
    per = seq_len if bos else seq_len - 1
    return per + (len(starts) - 1) * min(stride, per)


def _skipped(start: int, seq_len: int, stride: int, bos: bool) -> int:
    """Loss positions of a window that the previous (overlapping) window already scored."""
    return 0 if start == 0 else max(0, seq_len - stride - (0 if bos else 1))


def perplexity(model, ids, eval_cfg, label: str, bos: Optional[int] = None) -> Dict[str, Any]:
    """{"ppl", "nll", "tokens", "seconds"} over the protocol's windows (each after `bos` when it
    is a token id: the protocol's bos_token_id). The model's logits are
    taken in its own dtype (the lm_head's output; float16 on a float16 model), upcast to float32
    before the log-softmax, and the NLL summed in float64. A number that is not a measurement
    (non-finite or float16-saturated logits, a degenerate model, a perplexity that overflows or
    equals float16's largest value) gives ppl None and `ppl_problem` saying why."""
    import torch

    seq_len, stride = eval_cfg.seq_len, eval_cfg.stride
    starts = _window_starts(int(ids.numel()), seq_len, stride, eval_cfg.max_windows)
    if not starts:
        raise QRecipeError(f"eval text has {ids.numel()} tokens, fewer than one window",
                           key="eval.seq_len", value=seq_len)
    device = next(model.parameters()).device
    nll, count, problem = 0.0, 0, None
    t0 = time.perf_counter()
    bs = max(1, eval_cfg.batch_size)
    with torch.inference_mode(), progress(f"perplexity ({label})", len(starts), "windows") as bar:
        for i in range(0, len(starts), bs):
            batch = torch.stack([ids[s:s + seq_len] for s in starts[i:i + bs]])
            if bos is not None:
                batch = torch.cat([batch.new_full((batch.size(0), 1), bos), batch], dim=1)
            batch = batch.to(device)
            raw = model(batch).logits
            problem = problem or logits_problem(raw, label)
            logits = raw.float()
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1),
                reduction="none").view(batch.size(0), -1)
            for j, s in enumerate(starts[i:i + bs]):
                # Overlapping windows: score only the tokens the previous window did not.
                skip = _skipped(s, seq_len, stride, bos is not None)
                nll += losses[j, skip:].double().sum().item()
                count += losses.size(1) - skip
            bar.update(min(i + bs, len(starts)))
    seconds = time.perf_counter() - t0
    ppl, problem = _checked_ppl(nll / count, problem)
    if problem:
        log.warning("perplexity (%s): %s", label, problem)
    else:
        log.info("perplexity (%s): %.4f over %d tokens in %.1fs", label, ppl, count, seconds)
    out = {"ppl": ppl, "nll": nll / count if math.isfinite(nll) else None, "tokens": count,
           "seconds": seconds}
    return {**out, "ppl_problem": problem} if problem else out


FP16_MAX = 65504.0  # float16's largest finite value
_DEGENERATE = 0.5  # share of positions whose logits are all equal that makes a model degenerate


def logits_problem(logits, label: str) -> Optional[str]:
    """Why a batch's logits cannot give a perplexity, None when they can: NaN/inf, float16's
    largest value (saturated), or the same value for every token at most positions."""
    import torch

    half = logits.dtype == torch.float16
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        return (f"perplexity not finite: the {label} model's logits "
                + ("overflow in float16" if half else "are not finite")
                + f" ({bad} NaN/inf values)")
    if half and float(logits.abs().max()) >= FP16_MAX:
        return (f"perplexity not a measurement: the {label} model's logits saturate at "
                f"float16's largest value ({FP16_MAX:.0f}): they overflow in float16")
    flat = logits.reshape(-1, logits.size(-1))
    equal = (flat.amax(-1) == flat.amin(-1)).float().mean().item()
    if equal >= _DEGENERATE:
        return (f"perplexity not a measurement: the {label} model is degenerate (every token "
                f"gets the same logit at {equal:.0%} of positions)")
    return None


def _checked_ppl(mean_nll: float, problem: Optional[str]) -> Tuple[Optional[float], Optional[str]]:
    """(ppl, None), or (None, why) where the number would not be a measurement."""
    if problem:
        return None, problem
    if not math.isfinite(mean_nll):
        return None, f"perplexity not finite: the mean NLL is {mean_nll}"
    try:
        ppl = math.exp(mean_nll)
    except OverflowError:
        return None, f"perplexity not finite: exp of the mean NLL {mean_nll:.1f} overflows"
    if not math.isfinite(ppl):
        return None, f"perplexity not finite: exp of the mean NLL {mean_nll:.1f} overflows"
    if abs(ppl - FP16_MAX) <= FP16_MAX * 1e-4:
        return None, (f"perplexity {ppl:.2f} is float16's largest value ({FP16_MAX:.0f}): a "
                      "saturated computation, not a measurement")
    return ppl, None


def generation_speed(model, ids, prompt_len: int, new_tokens: int) -> Dict[str, float]:
    """Batch 1, greedy, warm, device-synchronized (qrecipe/evaluation/speed.py): prefill
    tokens/s from one forward over the prompt, decode tokens/s from `new_tokens` single-token
    steps over the KV cache (on CUDA replayed as a CUDA graph when the kernels allow;
    `decode_path` says which)."""
    cuda = next(model.parameters()).device.type == "cuda"
    return measure(model, ids, prompt_len, new_tokens, batch=1, repeats=3 if cuda else 1)


def footprint_bytes(model) -> int:
    return int(model.get_memory_footprint())
