"""The full shape of a decoder-only model, read from metadata only (never a weight, never torch):
what `qrecipe plan` needs to count bytes. models.ModelInfo holds the few widths validation needs;
this is the richer reader (heads, kv heads, head dim, vocab, tied embeddings, dtype).

A model is named as a hub id (only config.json is fetched), a local folder or config.json, a GGUF
file (header only), or a shipped model config name (conf/model/NAME.yaml). A config whose layers
are not the dense attention + gated MLP this arithmetic counts (mixture of experts, latent
attention, an unknown model_type) is a clear error, never a wrong number.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Optional

from qrecipe.errors import QRecipeError
from qrecipe.paths import config_dir, resolve_path

# Dense decoders with q/k/v/o attention projections and a gate/up/down MLP: the layout counted.
MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "granite",
               "olmo2")
# Fields that mean the layers hold more (or other) weights than the dense layout above.
UNMODELLED = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size",
              "kv_lora_rank", "q_lora_rank", "num_experts_per_tok", "expert_count")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class ModelShape:
    name: str
    source: str  # hub, local, gguf
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    dtype: str  # what unquantized tensors are held in (config torch_dtype; GGUF -> float32)
    attention_bias: bool = False
    # the checkpoint's own dtype on disk ("" = dtype): loading it in another dtype keeps the
    # memory-mapped source resident beside the cast copy (estimate.quantize_peak_bytes)
    stored_dtype: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def read_shape(model: str, revision: str = "main", dtype: Optional[str] = None) -> ModelShape:
    """MODEL as the user typed it -> its shape."""
    shipped = config_dir() / "model" / f"{model}.yaml"
    if "/" not in model and shipped.is_file():
        from omegaconf import OmegaConf
        c = OmegaConf.load(shipped)
        if c.get("path") in (None, "???"):
            raise QRecipeError("this model config has no path; give a folder or hub id",
                               key="model", value=model)
        return from_source(c.source, str(c.path), c.get("revision") or revision,
                          dtype or c.get("dtype"), name=model)
    if model.endswith(".gguf"):
        return from_source("gguf", model, revision, dtype)
    p = resolve_path(model, key="model")
    if p.is_dir() or p.name == "config.json":
        return from_source("local", model, revision, dtype)
    if model.count("/") == 1 and not p.exists() and not model.startswith((".", "/", "~")):
        return from_source("hub", model, revision, dtype)
    shipped_names = sorted(f.stem for f in (config_dir() / "model").glob("*.yaml"))
    raise QRecipeError("not a folder with config.json, a .gguf file, a hub id (org/name) or a "
                       "shipped model config", key="model", value=model,
                       allowed=", ".join(shipped_names))


def from_source(source: str, path: str, revision: str, dtype: Optional[str],
               name: Optional[str] = None) -> ModelShape:
    name = name or path
    if source == "gguf":
        p = resolve_path(path, key="model")
        if not p.is_file():
            raise QRecipeError("GGUF file not found", key="model", value=path)
        st = p.stat()
        return _from_gguf(str(p.resolve()), st.st_size, st.st_mtime_ns, name, dtype)
    if source == "local":
        p = resolve_path(path, key="model")
        f = p if p.name == "config.json" else p / "config.json"
        if not f.is_file():
            raise QRecipeError("not a transformers model folder (no config.json)",
                               key="model", value=path)
        return from_config(json.loads(f.read_text()), name, "local", dtype)
    from qrecipe.inputs.models import (
        _hub_file,  # the one place that fetches from the hub (offline message)
    )
    try:
        f = _hub_file(SimpleNamespace(path=path, revision=revision), "config.json")
    except QRecipeError as e:
        msg = str(e).split(": ", 1)[-1].split("; ")[0]
        raise QRecipeError(msg, key="model", value=path,
                           hint="offline or gated: plan from a local folder holding its "
                                "config.json, or a .gguf file") from None
    return from_config(json.loads(Path(f).read_text()), name, "hub", dtype)


def from_config(conf: Dict[str, Any], name: str, source: str = "local",
                dtype: Optional[str] = None) -> ModelShape:
    """A transformers config.json (as a dict) -> shape, or a QRecipeError naming the field."""
    conf = {**conf, **(conf.get("text_config") or {})}
    mt = conf.get("model_type")
    if mt not in MODEL_TYPES:
        raise QRecipeError("model_type not understood by the planner (its layer layout is not "
                           "counted)", key="model_type", value=mt, allowed=MODEL_TYPES)
    _reject_unmodelled(conf, name)

    def need(key: str) -> int:
        v = conf.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise QRecipeError("missing or not a positive integer in config.json",
                               key=key, value=v, hint=f"model {name}")
        return v

    hidden, heads = need("hidden_size"), need("num_attention_heads")
    head_dim = conf.get("head_dim") or hidden // heads
    stored = str(conf.get("torch_dtype") or conf.get("dtype") or "float32")
    return _shape(name, source, mt, hidden, need("intermediate_size"),
                  need("num_hidden_layers"), heads, conf.get("num_key_value_heads") or heads,
                  int(head_dim), need("vocab_size"), bool(conf.get("tie_word_embeddings", False)),
                  str(dtype or stored), bool(conf.get("attention_bias") or mt == "qwen2"),
                  stored)


def _reject_unmodelled(conf: Dict[str, Any], name: str) -> None:
    for k in UNMODELLED:
        if conf.get(k):
            raise QRecipeError("this architecture field is not modelled by the planner (its "
                               "layers hold weights the dense count would miss)", key=k,
                               value=conf[k], hint=f"model {name}; dense decoders only")


@lru_cache(maxsize=8)  # parsing the header (a 49k-token vocabulary) takes seconds
def _from_gguf(path: str, size: int, mtime_ns: int, name: str,
               dtype: Optional[str]) -> ModelShape:
    from gguf import (
        GGUFReader,  # numpy only; the header and tensor table, no tensor data
    )

    reader = GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()

    def field(key: str, default: Optional[int] = None) -> Optional[int]:
        f = reader.fields.get(f"{arch}.{key}")
        return default if f is None else int(f.parts[f.data[0]][0])

    conf = {"model_type": arch, "expert_count": field("expert_count")}
    if arch not in MODEL_TYPES:
        raise QRecipeError("GGUF architecture not understood by the planner", key="model",
                           value=f"{name} ({arch})", allowed=MODEL_TYPES)
    _reject_unmodelled(conf, name)
    names = {t.name for t in reader.tensors}
    hidden, heads = field("embedding_length"), field("attention.head_count")
    vocab = field("vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    # transformers dequantizes a GGUF to float32 (qrecipe's materialize does exactly that).
    return _shape(name, "gguf", arch, hidden, field("feed_forward_length"), field("block_count"),
                  heads, field("attention.head_count_kv", heads),
                  field("attention.key_length", hidden // heads), vocab,
                  "output.weight" not in names, dtype or "float32", "blk.0.attn_q.bias" in names,
                  "float32")


def _shape(name, source, mt, hidden, inter, layers, heads, kv, hd, vocab, tied, dtype,
           bias, stored: str = "") -> ModelShape:
    if dtype not in DTYPE_BYTES:
        raise QRecipeError("unknown dtype", key="dtype", value=dtype, allowed=DTYPE_BYTES)
    if heads % kv:
        raise QRecipeError("num_attention_heads is not a multiple of num_key_value_heads",
                           key="num_key_value_heads", value=kv, hint=f"model {name}")
    return ModelShape(name=name, source=source, model_type=mt, hidden=hidden,
                      intermediate=inter, layers=layers, heads=heads, kv_heads=kv, head_dim=hd,
                      vocab=vocab, tied=tied, dtype=dtype, attention_bias=bias,
                      stored_dtype="" if stored == dtype else stored)
