"""The one reader of a model's metadata, never a weight and never torch: config.json of a local
folder or of a hub model (only that file is fetched), or a GGUF header (read as the same keys by
qrecipe/inputs/gguf_meta.py). Two views of what it reads:

- ModelInfo (`describe(cfg)`): the widths validation checks a group size against, for any
  architecture (validate and the runner).
- ModelShape (`read_shape`, `from_source`): the full shape `qrecipe plan` counts bytes from
  (heads, kv heads, head dim, vocab, tied embeddings, dtype). Only for the dense decoders whose
  layout the planner counts: a config whose layers are otherwise (mixture of experts, latent
  attention, an unknown model_type) is a clear error, never a wrong number.

For the planner a model is named as a hub id, a local folder or config.json, a GGUF file, or a
shipped model config name (conf/model/NAME.yaml).

A shipped hub model config carries its config.json numbers (`model.shape`, with `shape.of` the
hub id they were read from): both views read those instead of fetching config.json, so
`qrecipe plan llama2_7b` and `qrecipe validate gptq_llama7b` work offline. They stand for that
model only: a `model.path` naming another model reads its own config.json.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf

from qrecipe.boundary.jsonfile import read_object
from qrecipe.errors import QRecipeError
from qrecipe.inputs import gguf_meta
from qrecipe.inputs.packaged import local_file
from qrecipe.paths import config_dir, resolve_path

SOURCES = ("hub", "local", "gguf")
# Dense decoders with q/k/v/o attention projections and a gate/up/down MLP: the layout counted.
MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "granite",
               "olmo2",
               # Gemma 3 text (a GGUF header says gemma3): the same linears; its extra norms
               # (pre/post feed-forward, q/k) are ~0.01% of Gemma 3 270M, not counted
               "gemma3_text", "gemma3")
# Fields that mean the layers hold more (or other) weights than the dense layout above.
UNMODELLED = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size",
              "kv_lora_rank", "q_lora_rank", "num_experts_per_tok")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_HUB_HINT = ("check the id and revision, log in for gated models, or use model.source=local / "
             "gguf offline")


@dataclass(frozen=True)
class ModelInfo:
    architecture: str
    hidden_size: int
    intermediate_size: int
    num_layers: int

    def linear_in_features(self) -> dict:
        """in_features of the quantized linear layers: what a group size must divide."""
        return {"hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size}


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


def model_file(source: str, path: str, key: str = "model.path") -> Path:
    """The GGUF file, or the local folder holding config.json; a clear error when absent.
    A GGUF a package assembles from chunks is assembled here, once (qrecipe/inputs/packaged.py)."""
    p = local_file(path, key=key) if source == "gguf" else resolve_path(path, key=key)
    if source == "gguf" and not p.is_file():
        raise QRecipeError("GGUF file not found", key=key, value=path)
    # lexists: a config.json that is there but no plain file is refused by the JSON reader,
    # naming what it is, rather than called missing
    if source == "local" and not os.path.lexists(p / "config.json"):
        raise QRecipeError("not a transformers model directory (no config.json)", key=key,
                           value=path)
    return p


def hub_file(path: str, revision: Optional[str], filename: str, key: str = "model.path",
             hint: str = _HUB_HINT) -> str:
    """One file of a hub model (cached by huggingface_hub): the one place qrecipe fetches a
    file from the hub without the weights."""
    try:
        from huggingface_hub import hf_hub_download
        return hf_hub_download(path, filename, revision=revision)
    except Exception as e:  # offline, gated, or a typo in the id: all fixable by the user
        raise QRecipeError(f"cannot fetch {filename} from the hub ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]})", key=key, value=path,
                           hint=hint) from None


def read_config(source: str, path: str, revision: Optional[str] = None,
                key: str = "model.path", hint: str = _HUB_HINT) -> Dict[str, Any]:
    """The model's config.json as a dict (a GGUF header as the same keys), a multimodal
    model's text_config merged over it. Files from outside are read within limits (a JSON
    object of at most 4 MiB: qrecipe/boundary/jsonfile.py; GGUF bounds: gguf_meta.py); reading
    one never imports code, so `qrecipe plan` may read the config of a folder that names some."""
    if source not in SOURCES:
        raise QRecipeError("unknown model source", key="model.source", value=source,
                           allowed=SOURCES)
    if source == "gguf":
        return gguf_meta.read_config(model_file(source, path, key), key)
    f = Path(hub_file(path, revision, "config.json", key, hint)) if source == "hub" \
        else model_file(source, path, key) / "config.json"
    conf = read_object(f, key)
    text = conf.get("text_config") or {}
    if not isinstance(text, dict):
        raise QRecipeError(f"config.json's text_config is not an object (a "
                           f"{type(text).__name__})", key=key, value=str(f))
    return {**conf, **text, "architectures": conf.get("architectures")}


def _unreadable(e: Exception, key: str, path: str) -> QRecipeError:
    return QRecipeError(f"cannot read the model's shapes ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''})", key=key, value=path)


def shipped_config(model) -> Optional[Dict[str, Any]]:
    """The config.json numbers a model config carries (`shape`), when they are of `path`."""
    shape = model.get("shape") if hasattr(model, "get") else None
    if not shape or str(shape.get("of")) != str(model.get("path")):
        return None
    conf = OmegaConf.to_container(shape) if isinstance(shape, DictConfig) else dict(shape)
    conf.pop("of", None)
    return conf


def describe(cfg) -> ModelInfo:
    """The widths validation needs, from metadata only (cfg: the recipe's `model` section)."""
    conf = config_of(cfg)
    try:
        hidden = int(conf["hidden_size"])
        return ModelInfo(architecture=(conf.get("architectures") or ["?"])[0],
                         hidden_size=hidden,
                         intermediate_size=int(conf.get("intermediate_size") or hidden * 4),
                         num_layers=int(conf.get("num_hidden_layers") or 0))
    except (KeyError, TypeError, ValueError, OverflowError) as e:  # OverflowError: 1e999
        raise _unreadable(e, "model.path", cfg.path) from None


def config_of(model) -> Dict[str, Any]:
    """A composed `model` section's config.json numbers: the shape it ships, else read."""
    return shipped_config(model) or read_config(model.source, model.path, model.get("revision"))


def model_shape(model, dtype: Optional[str] = None) -> ModelShape:
    """A composed `model` section -> its shape."""
    conf = config_of(model)
    dtype = dtype or model.get("dtype")
    return from_config(conf, str(model.path), str(model.source),
                       None if dtype in (None, "auto") else str(dtype))


def read_shape(model: str, revision: str = "main", dtype: Optional[str] = None) -> ModelShape:
    """MODEL as the user typed it -> its shape."""
    shipped = config_dir() / "model" / f"{model}.yaml"
    if "/" not in model and shipped.is_file():
        c = OmegaConf.load(shipped)
        if c.get("path") in (None, "???"):
            raise QRecipeError("this model config has no path; give a folder or hub id",
                               key="model", value=model)
        conf = shipped_config(c)
        if conf is not None:  # its shape, shipped: nothing fetched
            return from_config(conf, model, str(c.source), dtype or c.get("dtype"))
        return from_source(c.source, str(c.path), c.get("revision") or revision,
                           dtype or c.get("dtype"), name=model)
    if model.endswith(".gguf"):
        return from_source("gguf", model, revision, dtype)
    p = resolve_path(model, key="model")
    if p.is_dir() or p.name == "config.json":
        folder = str(p.parent) if p.name == "config.json" else model
        return from_source("local", folder, revision, dtype, name=model)
    if model.count("/") == 1 and not p.exists() and not model.startswith((".", "/", "~")):
        return from_source("hub", model, revision, dtype)
    shipped_names = sorted(f.stem for f in (config_dir() / "model").glob("*.yaml"))
    raise QRecipeError("not a folder with config.json, a .gguf file, a hub id (org/name) or a "
                       "shipped model config", key="model", value=model,
                       allowed=", ".join(shipped_names))


def from_source(source: str, path: str, revision: Optional[str], dtype: Optional[str],
                name: Optional[str] = None) -> ModelShape:
    conf = read_config(source, path, revision, key="model",
                       hint="offline or gated: plan from a local folder holding its "
                            "config.json, or a .gguf file")
    return from_config(conf, name or path, source, dtype)


def from_config(conf: Dict[str, Any], name: str, source: str = "local",
                dtype: Optional[str] = None) -> ModelShape:
    """A config.json (as read_config gives it) -> shape, or a QRecipeError naming the field."""
    mt = conf.get("model_type")
    if mt not in MODEL_TYPES:
        raise QRecipeError("model_type not understood by the planner (its layer layout is not "
                           "counted)", key="model_type", value=mt, allowed=MODEL_TYPES)
    for k in UNMODELLED:
        if conf.get(k):
            raise QRecipeError("this architecture field is not modelled by the planner (its "
                               "layers hold weights the dense count would miss)", key=k,
                               value=conf[k], hint=f"model {name}; dense decoders only")

    def need(key: str, default: Optional[int] = None) -> int:
        v = conf.get(key)
        if not v and default is not None:  # absent (or 0): what the architecture implies
            return default
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise QRecipeError("missing or not a positive integer in config.json",
                               key=key, value=v, hint=f"model {name}")
        return v

    hidden, heads = need("hidden_size"), need("num_attention_heads")
    kv = need("num_key_value_heads", heads)
    stored = str(conf.get("torch_dtype") or conf.get("dtype") or "float32")
    dtype = str(dtype or stored)
    if dtype not in DTYPE_BYTES:
        raise QRecipeError("unknown dtype", key="dtype", value=dtype, allowed=DTYPE_BYTES)
    if heads % kv:
        raise QRecipeError("num_attention_heads is not a multiple of num_key_value_heads",
                           key="num_key_value_heads", value=kv, hint=f"model {name}")
    return ModelShape(name=name, source=source, model_type=mt, hidden=hidden,
                      intermediate=need("intermediate_size"), layers=need("num_hidden_layers"),
                      heads=heads, kv_heads=kv, vocab=need("vocab_size"),
                      head_dim=need("head_dim", hidden // heads),
                      tied=bool(conf.get("tie_word_embeddings", False)), dtype=dtype,
                      attention_bias=bool(conf.get("attention_bias") or mt == "qwen2"),
                      stored_dtype="" if stored == dtype else stored)
