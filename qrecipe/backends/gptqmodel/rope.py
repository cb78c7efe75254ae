"""gptqmodel 7.6 normalizes a config's RoPE settings into one flat `rope_parameters` dict when it
loads and saves a model (gptqmodel/utils/hf.py, _normalize_rope_parameters_config_compat). A
Gemma 3 config keeps one RoPE dict per attention type (`rope_parameters` keyed by
"full_attention" / "sliding_attention", the names in `layer_types`): that is already the form
transformers 5.17 reads and validates, and gptqmodel's normalization treats the per-type keys as
settings (`'str' object has no attribute 'get'`), so no Gemma 3 model could be saved. The
replacement leaves such a config as it is and hands every other config to gptqmodel's own code,
so no other model's config changes.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from qrecipe.backends.gptqmodel.patches import PER_LAYER_ROPE
from qrecipe.backends.patching import guarded

_KEY = "gptqmodel.utils.hf._normalize_rope_parameters_config_compat"


def per_layer_type(config: Any) -> bool:
    """Whether config's RoPE settings are keyed by attention type (Gemma 3)."""
    rope, types = getattr(config, "rope_parameters", None), getattr(config, "layer_types", None)
    return isinstance(rope, dict) and bool(rope) and bool(types) and set(rope) <= set(types)


def _keeping(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def normalize(config: Any) -> None:
        if per_layer_type(config):
            return
        original(config)
    return normalize


@contextmanager
def per_layer_rope() -> Iterator[bool]:
    """While active, gptqmodel keeps per-attention-type RoPE configs as they are."""
    with guarded(PER_LAYER_ROPE, lambda orig: {k: _keeping(fn) for k, fn in orig.items()}) \
            as applied:
        yield applied
