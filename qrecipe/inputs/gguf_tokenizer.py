"""The tokenizer of a Gemma GGUF, rebuilt as the BPE tokenizer the model was trained with.

A Gemma GGUF (general.architecture gemma2/gemma3/gemma4, tokenizer.ggml.model "llama": a
SentencePiece BPE vocabulary with merge scores and no merges list) is turned by transformers
5.17 into a Unigram tokenizer over those scores (GGUFGemmaConverter: "Hello world" -> Hello, ▁w,
or, ld), and the folder it saves reloads as a BPE without merges: one token per character.
Measured on Gemma 3 270M over the first 20,000 characters of WikiText-2 (BOS first): the
reloaded tokenizer 1.0 token/char and 6.49 nats/char, the Unigram 0.435 and 1.77, this BPE 0.224
and 0.563 (issue 24; the lowest is the tokenizer it was trained with). SentencePiece BPE (and
llama.cpp's SPM tokenizer) merges adjacent pieces by the score of the merged piece: the merges
here are exactly that order (transformers' generate_merges), with the converter's whitespace
rules and GemmaTokenizer's normalizer and byte fallback. Control tokens (<bos>,
<start_of_turn>, the unused ones) are special added tokens; the BOS is added when
tokenizer.ggml.add_bos_token says so.

A cached dequantized copy made before this rebuild carries the broken tokenizer: CACHE_SUFFIX
names the new copies apart (qrecipe/inputs/models.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from qrecipe.inputs import gguf_meta
from qrecipe.inputs.gguf_load import fast_reader

FAMILY = ("gemma2", "gemma3", "gemma4")  # transformers' GGUFGemmaConverter architectures
CACHE_SUFFIX = "-spmbpe1"  # bump when the rebuilt tokenizer changes
_CONTROL, _BYTE = 3, 6  # tokenizer.ggml.token_type values (llama.cpp's llama_token_type)


def rebuilds(src: Path) -> bool:
    """Whether qrecipe builds this GGUF's tokenizer itself (its header says so; no torch)."""
    fields, _ = gguf_meta.read_header(src)
    return (fields.get("general.architecture") in FAMILY
            and fields.get("tokenizer.ggml.model") == "llama")


def cache_suffix(src: Path) -> str:
    return CACHE_SUFFIX if rebuilds(src) else ""


def _arrays(src: Path) -> Dict[str, Any]:
    """Tokens, scores, token types and the special ids/flags, read with the fast reader."""
    f = fast_reader(src).fields

    def arr(key: str, conv) -> List[Any]:
        return [conv(f[key].parts[i]) for i in f[key].data]

    def one(key: str, default=None):
        return f[key].parts[-1][0].item() if key in f else default

    return {"tokens": arr("tokenizer.ggml.tokens", lambda p: bytes(p).decode("utf-8")),
            "scores": arr("tokenizer.ggml.scores", lambda p: float(p[0])),
            "types": arr("tokenizer.ggml.token_type", lambda p: int(p[0])),
            "bos": one("tokenizer.ggml.bos_token_id"), "eos": one("tokenizer.ggml.eos_token_id"),
            "unk": one("tokenizer.ggml.unknown_token_id"),
            "pad": one("tokenizer.ggml.padding_token_id"),
            "add_bos": bool(one("tokenizer.ggml.add_bos_token", True)),
            "add_eos": bool(one("tokenizer.ggml.add_eos_token", False))}


def _piece(token: str) -> str:
    """The converter's whitespace rules: a tab byte is a tab, spaces are ▁ (the normalizer's)."""
    if token == "<0x09>":
        return "\t"
    return "▁" * len(token) if " " in token and not token.strip() else token


def build(src: Path):
    """A transformers GemmaTokenizer equal to the one the model was trained with."""
    from tokenizers import AddedToken  # deferred: tokenizers, transformers
    from transformers import GemmaTokenizer
    from transformers.convert_slow_tokenizer import generate_merges

    a = _arrays(src)
    pieces = [_piece(t) for t in a["tokens"]]
    vocab = {p: i for i, p in reversed(list(enumerate(pieces)))}  # a duplicate: its first id
    skip = {p for p, t in zip(pieces, a["types"]) if t in (_CONTROL, _BYTE)}
    scores = {p: s for p, s in zip(pieces, a["scores"]) if p not in skip}
    merges = generate_merges(vocab, scores, skip_tokens=skip)
    name = {k: pieces[a[k]] for k in ("bos", "eos", "unk", "pad") if a[k] is not None}
    tok = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=a["add_bos"],
                         add_eos_token=a["add_eos"], bos_token=name.get("bos", "<bos>"),
                         eos_token=name.get("eos", "<eos>"), unk_token=name.get("unk", "<unk>"),
                         pad_token=name.get("pad", "<pad>"))
    control = [p for p, t in zip(pieces, a["types"]) if t == _CONTROL and p not in name.values()]
    tok.add_tokens([AddedToken(p, special=True, normalized=False) for p in control],
                   special_tokens=True)
    return tok
