"""Text for calibration and evaluation, and the token ids cut from it.

Sources: a hub dataset (id / config / split / text field), a local file (txt, jsonl, json,
parquet; pkg://qrecipe/texts/FILE names the texts shipped inside the package), or Python's
bundled documentation (pydoc_data.topics, always there offline). Rows are
joined with blank lines, the way the GPTQ/AWQ papers join WikiText-2, then tokenized once; the
token ids are cached by (tokenizer, text) fingerprint so a sweep tokenizes each text only once.
Calibration samples are windows of that token stream at offsets drawn from random.Random(seed):
the same seed gives the same rows, and their sha256 goes into the output.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

from qrecipe.errors import QRecipeError
from qrecipe.paths import resolve_path
from qrecipe.record.cache import Cache
from qrecipe.record.fingerprint import Background, sha256_text, sha256_tokens

log = logging.getLogger(__name__)

SOURCES = ("hub", "local", "pydoc")
LOCAL_SUFFIXES = (".txt", ".md", ".jsonl", ".json", ".parquet")


@dataclass
class TextSpec:
    """The fields shared by the calibration and eval groups that say where text comes from."""
    section: str  # "calibration" or "eval": names keys in error messages
    source: str
    path: str | None
    name: str | None
    split: str
    text_field: str
    # jsonl/json records holding this field instead of text_field are chat conversations
    # (OpenAI `messages`), rendered with the tokenizer's chat template
    # (qrecipe/inputs/calibration.py).
    messages_field: str | None = None

    @classmethod
    def from_cfg(cls, section: str, cfg) -> "TextSpec":
        return cls(section, cfg.source, cfg.get("path"), cfg.get("name"), cfg.split,
                   cfg.text_field, cfg.get("messages_field"))

    def local_file(self) -> Path:
        return resolve_path(self.path, key=f"{self.section}.path")

    def describe(self) -> str:
        if self.source == "pydoc":
            return "pydoc_data.topics"
        if self.source == "hub":
            return f"hub:{self.path}/{self.name or '-'}/{self.split}[{self.text_field}]"
        return f"file:{self.path}"


def check_spec(spec: TextSpec) -> None:
    """Cheap checks made before any weight is loaded."""
    if spec.source not in SOURCES:
        raise QRecipeError("unknown text source", key=f"{spec.section}.source",
                           value=spec.source, allowed=SOURCES)
    if spec.source in ("hub", "local") and not spec.path:
        raise QRecipeError(f"source {spec.source} needs a path", key=f"{spec.section}.path",
                           value=spec.path)
    if spec.source == "local":
        p = spec.local_file()
        if not p.is_file():
            raise QRecipeError("file not found", key=f"{spec.section}.path", value=spec.path)
        if p.suffix.lower() not in LOCAL_SUFFIXES:
            raise QRecipeError("unsupported file type", key=f"{spec.section}.path",
                               value=spec.path, allowed=LOCAL_SUFFIXES)
        if p.stat().st_size == 0:
            raise QRecipeError("file is empty", key=f"{spec.section}.path", value=spec.path)
        if p.suffix.lower() != ".parquet":
            _check_utf8(p, spec)
        if p.suffix.lower() == ".jsonl":
            _check_first_record(p, spec)


def _check_first_record(p: Path, spec: TextSpec) -> None:
    """The first record of a jsonl file is JSON and has the text field."""
    with open(p, encoding="utf-8") as f:
        line = next((ln for ln in f if ln.strip()), "")
    try:
        rec = json.loads(line)
    except ValueError as e:
        raise QRecipeError(f"not valid JSON ({str(e)[:120]})", key=f"{spec.section}.path",
                           value=spec.path) from None
    # a chat record (messages_field) stands in for the text field (calibration.py renders it)
    if isinstance(rec, dict) and spec.text_field not in rec and spec.messages_field not in rec:
        raise _no_field(spec, sorted(rec))


def _check_utf8(p: Path, spec: TextSpec, limit: int = 1 << 20) -> None:
    """A text file must be UTF-8 text: the first MiB is decoded strictly (no NUL bytes)."""
    import codecs
    with open(p, "rb") as f:
        head = f.read(limit)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < limit)
        bad = head.find(b"\0")
        if bad >= 0:
            raise UnicodeDecodeError("utf-8", head, bad, bad + 1, "NUL byte")
    except UnicodeDecodeError as e:
        raise QRecipeError(f"not UTF-8 text (binary or another encoding; byte {e.start})",
                           key=f"{spec.section}.path", value=spec.path,
                           hint="convert the file to UTF-8 text") from None


def load_text(spec: TextSpec, tokenizer=None) -> str:
    check_spec(spec)
    if spec.source == "pydoc":
        from pydoc_data.topics import topics
        rows = [topics[k] for k in sorted(topics)]
    elif spec.source == "local":
        rows = _local_rows(spec, tokenizer)
    else:
        rows = _hub_rows(spec)
    text = "\n\n".join(r for r in rows if r is not None)
    if not text.strip():
        raise QRecipeError("no text found", key=f"{spec.section}.path", value=spec.path,
                           hint=f"check {spec.section}.text_field={spec.text_field!r}")
    return text


def _local_rows(spec: TextSpec, tokenizer=None) -> List[str]:
    p = spec.local_file()
    suffix = p.suffix.lower()
    if suffix in (".txt", ".md"):
        return [p.read_text(encoding="utf-8", errors="replace")]
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(p)
        except (pa.ArrowException, OSError) as e:
            raise QRecipeError(f"not a readable parquet file ({str(e).splitlines()[0][:120]})",
                               key=f"{spec.section}.path", value=spec.path) from None
        if spec.text_field not in table.column_names:
            raise _no_field(spec, table.column_names)
        return [str(x) for x in table.column(spec.text_field).to_pylist()]
    try:
        if suffix == ".jsonl":
            records = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()
                       if line.strip()]
        else:
            records = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise QRecipeError(f"not valid JSON ({str(e)[:120]})", key=f"{spec.section}.path",
                           value=spec.path) from None
    if not isinstance(records, (list, dict)):
        records = [records]
        if isinstance(records, dict):  # {"text": [...]} column layout
            records = records.get(spec.text_field, records)
    rows = []
    for r in records:
        if isinstance(r, str):
            rows.append(r)
        elif isinstance(r, dict):
            if spec.messages_field and spec.messages_field in r and spec.text_field not in r:
                rows.append(render_chat(r[spec.messages_field], tokenizer, spec))
                continue
            if spec.text_field not in r:
                raise _no_field(spec, sorted(r))
            rows.append(str(r[spec.text_field]))
    return rows


def render_chat(messages, tokenizer, spec) -> str:
    """One conversation as the text the model sees: the tokenizer's chat template."""
    where = dict(key=f"{spec.section}.path", value=spec.path)
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise QRecipeError(f"`{spec.messages_field}` must be a list of {{role, content}}",
                           hint="OpenAI chat format", **where)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise QRecipeError("chat data needs a tokenizer with a chat template", **where,
                           hint="the model's tokenizer has none; give plain text instead")
    return tokenizer.apply_chat_template(messages, tokenize=False)


def _no_field(spec: TextSpec, columns) -> QRecipeError:
    return QRecipeError(f"no such field in {spec.path}", key=f"{spec.section}.text_field",
                        value=spec.text_field, allowed=columns)


def _hub_rows(spec: TextSpec) -> List[str]:
    try:
        import datasets
        ds = datasets.load_dataset(spec.path, spec.name, split=spec.split)
    except Exception as e:  # offline, unknown id/config/split: the user's to fix
        raise QRecipeError(
            f"cannot load hub dataset ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
            key=f"{spec.section}.path", value=spec.path,
            hint=f"offline? use {spec.section}.source=local with a file, or pydoc") from None
    if spec.text_field not in ds.column_names:
        raise _no_field(spec, ds.column_names)
    return list(ds[spec.text_field])


def token_ids(spec: TextSpec, tokenizer, tokenizer_fp: str, cache: Cache,
              meanwhile: Optional[Callable[[], Any]] = None):
    """The whole text as one 1-D LongTensor of token ids, cached by (tokenizer, text).
    meanwhile: called on this thread while a text not in the cache is tokenized on another (the
    runner imports the backend's library there): a fast tokenizer's encoder releases the GIL, so
    a 1.6 MB text's ~1 s of tokenizing and a library's import of a few seconds overlap."""
    import torch

    text = load_text(spec, tokenizer)
    key = sha256_text(f"{tokenizer_fp}\n{sha256_text(text)}")
    hit = cache.load_tensor("tokens", key)
    if hit is not None:
        log.info("%s: %d tokens from cache (%s)", spec.section, hit.numel(), spec.describe())
        return hit
    log.info("%s: tokenizing %s (%d chars)", spec.section, spec.describe(), len(text))
    job = Background(lambda stop: tokenizer(text, add_special_tokens=False)["input_ids"],
                     "qrecipe-tokenize")
    if meanwhile is not None:
        meanwhile()  # if it raises, the daemon thread ends on its own
    ids = torch.tensor(job.result(), dtype=torch.long)
    cache.save_tensor("tokens", key, ids)
    return ids


def calibration_rows(ids, num_samples: int, seq_len: int, seed: int,
                     overlap: bool = True, bos: Optional[int] = None) -> list:
    """num_samples windows of seq_len tokens at seeded random offsets (overlap=False: distinct
    non-overlapping windows, so num_samples x seq_len must fit in the text). With `bos`
    (window_bos): that token and seq_len-1 text tokens, what the model sees when evaluated."""
    if bos is not None and seq_len > 1:
        import torch  # deferred: torch
        return [torch.cat([r.new_full((1,), bos), r])
                for r in calibration_rows(ids, num_samples, seq_len - 1, seed, overlap)]
    if num_samples < 1 or seq_len < 1:
        raise QRecipeError("must be positive", key="calibration.num_samples/seq_len",
                           value=(num_samples, seq_len))
    n = int(ids.numel())
    if n <= seq_len:
        raise QRecipeError(f"calibration text too short: {n} tokens, need more than {seq_len}",
                           key="calibration.seq_len", value=seq_len,
                           hint="use a longer text or a smaller calibration.seq_len")
    rng = random.Random(seed)
    if not overlap:
        slots = n // seq_len
        if num_samples > slots:
            raise QRecipeError(
                f"calibration text too short for {num_samples} x {seq_len} tokens without "
                f"overlap: {n} tokens hold {slots} windows", key="calibration.num_samples",
                value=num_samples, hint="lower calibration.num_samples or seq_len, use a longer "
                                        "text, or set calibration.overlap=true")
        return [ids[s * seq_len:(s + 1) * seq_len].clone()
                for s in rng.sample(range(slots), num_samples)]
    starts = [rng.randrange(0, n - seq_len) for _ in range(num_samples)]
    return [ids[s:s + seq_len].clone() for s in starts]


def rows_fingerprint(rows) -> str:
    return sha256_tokens(rows)


def window_bos(tokenizer) -> Optional[int]:
    """The one rule for what starts a window of token ids (a perplexity window, a calibration
    row): the tokenizer's BOS id when the tokenizer puts it before any text it encodes with its
    special tokens (its add_bos_token, which transformers takes from a GGUF's
    tokenizer.ggml.add_bos_token: Gemma, Llama), else None: text only (SmolLM2). Models trained
    with a BOS first treat the first positions as an attention sink: without it Gemma 3 270M's
    WikiText-2 perplexity is several times its real value."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return int(bos) if special[:1] == [bos] and plain[:1] != [bos] else None
