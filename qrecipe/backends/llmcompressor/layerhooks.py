"""llm-compressor's per-layer events -> qrecipe's per-layer lines (telemetry/layerlog.py).

Its sequential pipeline announces `LifecycleCallbacks.calibration_start` and, after each
subgraph, `sequential_epoch_end` (its modifiers quantize the subgraph's modules on that event).
Applied through backends.patching.guarded for the quantize stage: another llm-compressor loses
only the per-layer lines, with one warning line.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Dict, List

from qrecipe.backends.llmcompressor.patches import LAYER_EVENTS
from qrecipe.backends.patching import guarded
from qrecipe.telemetry import layerlog


def install(stack: ExitStack, layers: layerlog.LayerLog) -> None:
    stack.enter_context(guarded(LAYER_EVENTS, lambda original: _hooks(original, layers)))


def _hooks(original: Dict[str, Any], layers: layerlog.LayerLog) -> Dict[str, Any]:
    calib_start = original["LifecycleCallbacks.calibration_start"].__func__
    epoch_end = original["LifecycleCallbacks.sequential_epoch_end"].__func__
    seen = [0]

    def calibration_start(cls, **kwargs):
        seen[0] = 0  # each pipeline pass (AWQ runs a second one) starts at layer 0
        layers.first_layer_starts()
        return calib_start(cls, **kwargs)

    def sequential_epoch_end(cls, modules, **kwargs):
        result = epoch_end(cls, modules, **kwargs)
        blocks = _decoder_layers(modules)
        if blocks:  # the last subgraph (final norm, lm_head) holds no decoder layer
            first, seen[0] = seen[0], seen[0] + len(blocks)
            if len(blocks) == 1:
                layers.done(first, blocks[0])
            elif not all(layers.is_done(i) for i in range(first, seen[0])):
                layers.done(f"{first}-{seen[0] - 1}")
        return result

    return {"LifecycleCallbacks.calibration_start": classmethod(calibration_start),
            "LifecycleCallbacks.sequential_epoch_end": classmethod(sequential_epoch_end)}


def _decoder_layers(modules) -> List[str]:
    """Names of the decoder layers (the model's no-split module classes) among `modules`."""
    from llmcompressor.core import active_session

    model = getattr(active_session().state, "model", None)
    classes = set(getattr(model, "_no_split_modules", None) or ())
    ids = {id(m) for m in modules if type(m).__name__ in classes}
    if not ids:
        return []
    return [n for n, m in model.named_modules() if id(m) in ids]

