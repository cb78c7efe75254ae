"""The calibration set: rows of token ids drawn from one source or a weighted mix of sources.

One source: the `calibration` group's own fields (source, path, ...). Several: `calibration.mix`,
a list of entries holding the same fields (missing ones inherit the group's) and a `weight`;
`num_samples` is split by weight (largest remainder, at least one row per source) and every
source's rows are drawn with the group's seed, then shuffled together by that seed.

Chat data: a local jsonl whose records hold `messages` (OpenAI format) is rendered with the
tokenizer's chat template, so calibration sees the same special tokens the deployed model will.

The fingerprint names every source with its weight, its row count and the sha256 of its whole
token stream (one changed message changes it, sampled or not), and the sha256 of the rows used.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Callable, Dict, List, Optional, Tuple

from qrecipe.errors import QRecipeError
from qrecipe.inputs import texts as data

log = logging.getLogger(__name__)

FIELDS = ("source", "path", "name", "split", "text_field", "messages_field")
MIX_KEYS = FIELDS + ("weight",)


def specs(c) -> List[Tuple[data.TextSpec, float]]:
    """(source spec, weight) for each source of the calibration group."""
    if not c.get("mix"):
        return [(data.TextSpec.from_cfg("calibration", c), 1.0)]
    out = []
    for i, m in enumerate(c.mix):
        section = f"calibration.mix[{i}]"
        extra = sorted(set(m) - set(MIX_KEYS))
        if extra:
            raise QRecipeError("unknown key in a calibration mix entry", key=section,
                               value=extra[0], allowed=MIX_KEYS)
        f = {k: m.get(k, c.get(k)) for k in FIELDS}
        w = m.get("weight", 1.0)
        if not isinstance(w, (int, float)) or w <= 0:
            raise QRecipeError("weight must be a positive number", key=f"{section}.weight",
                               value=w)
        out.append((data.TextSpec(section, f["source"], f["path"], f["name"], f["split"],
                                  f["text_field"], f["messages_field"]), float(w)))
    return out


def check(c) -> None:
    """Cheap checks before any weight is loaded."""
    for spec, _ in specs(c):
        data.check_spec(spec)
    for k in ("num_samples", "seq_len"):
        if c[k] < 1:
            raise QRecipeError("must be at least 1", key=f"calibration.{k}", value=c[k])
    if c.get("mix") and c.num_samples < len(c.mix):
        raise QRecipeError("fewer rows than mixed sources", key="calibration.num_samples",
                           value=c.num_samples, hint=f"at least {len(c.mix)}")


def split_counts(weights: List[float], n: int) -> List[int]:
    """n rows split by weight: largest remainder, every source at least one row."""
    total = sum(weights)
    exact = [w / total * n for w in weights]
    counts = [max(1, int(x)) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    for i in order:
        if sum(counts) >= n:
            break
        counts[i] += 1
    while sum(counts) > n:  # the at-least-one rule overshot: take from the largest
        counts[counts.index(max(counts))] -= 1
    return counts


def build(c, tokenizer, tok_fp: str, cache,
          meanwhile: Optional[Callable[[], Any]] = None) -> Tuple[list, Dict[str, Any]]:
    """(rows, fingerprint) of the calibration set. meanwhile: called once, beside the first
    tokenizing of a text the cache does not hold (texts.token_ids); not at all where every
    text is cached."""
    pending = [meanwhile] if meanwhile is not None else []

    def once():
        if pending:
            pending.pop()()
    pairs = specs(c)
    counts = split_counts([w for _, w in pairs], c.num_samples)
    rows: list = []
    sources = []
    bos = data.window_bos(tokenizer)  # rows start as evaluation windows do (Gemma: a BOS)
    for (spec, w), n in zip(pairs, counts):
        ids = data.token_ids(spec, tokenizer, tok_fp, cache, meanwhile=once)
        got = data.calibration_rows(ids, n, c.seq_len, c.seed,
                                     overlap=c.get("overlap", True), bos=bos)
        rows += got
        sources.append({"source": spec.describe(), "weight": w, "rows": n,
                        "text_tokens": int(ids.numel()),
                        "text_token_ids_sha256": data.rows_fingerprint([ids])})
    if len(pairs) > 1:
        random.Random(c.seed).shuffle(rows)
    fp = {"source": " + ".join(s["source"] for s in sources), "sources": sources,
          "text_tokens": sum(s["text_tokens"] for s in sources), "rows": len(rows),
          "seq_len": c.seq_len, "seed": c.seed, "token_ids_sha256": data.rows_fingerprint(rows),
          **({"bos_token_id": bos} if bos is not None else {})}  # a model without: as before
    log.info("calibration: %d x %d tokens from %s, sha256 %s", len(rows), c.seq_len,
             ", ".join(f"{s['source']} ({s['rows']})" for s in sources),
             fp["token_ids_sha256"][:16])
    return rows, fp
