"""gptqmodel's per-layer events -> qrecipe's per-layer lines (telemetry/layerlog.py).

- GPTQ/AWQ (ModuleLooper): the looper asks `_resolve_layer_callback` / `_resolve_subset_callback`
  for its callbacks at every event; with nothing registered they answer qrecipe's events here:
  `layer_complete` (a layer is quantized) and `subset_event` ("forward_start": the first layer
  begins).
- RTN (WeightOnlyLooper): it announces its plan to `LoopExtensions.start` and publishes every
  finished layer to `LoopExtensions.publish`.
Applied through backends.patching.guarded for the quantize stage: another gptqmodel loses only
the per-layer lines, with one warning line.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Dict

from qrecipe.backends.gptqmodel.patches import LAYER_EVENTS
from qrecipe.backends.patching import guarded
from qrecipe.telemetry import layerlog


class _Events:
    """The looper's callback protocol (`layer_complete`, `subset_event`)."""

    def __init__(self, layers: layerlog.LayerLog):
        self.layers = layers
        self.names: Dict[int, str] = {}  # from the looper's plan (LoopExtensions.start)

    def layer_complete(self, layer_idx: int, submodule_finalized: bool) -> None:
        # Emitted twice per layer when packing runs after it (False, then True from a worker):
        # the first one ends the layer's own work.
        self.layers.done(layer_idx, self.names.get(layer_idx))

    def subset_event(self, stage: str, layer_idx: int, subset_index: int, **_: Any) -> None:
        if stage == "forward_start" and subset_index == 0:
            self.layers.first_layer_starts()


def install(stack: ExitStack, layers: layerlog.LayerLog) -> None:
    stack.enter_context(guarded(LAYER_EVENTS, lambda original: _hooks(original, layers)))


def _hooks(original: Dict[str, Any], layers: layerlog.LayerLog) -> Dict[str, Any]:
    events = _Events(layers)
    layer_cb = original["ModuleLooper._resolve_layer_callback"]
    subset_cb = original["ModuleLooper._resolve_subset_callback"]
    publish, begin = original["LoopExtensions.publish"], original["LoopExtensions.start"]

    def observed(self, step, futures=()):
        if getattr(step, "kind", None) == "layer":
            layers.done(step.index, step.name)
        return publish(self, step, futures)

    def started(self, context):
        events.names = {st.index: st.name for st in context.plan.steps if st.kind == "layer"}
        layers.first_layer_starts()
        return begin(self, context)

    return {"ModuleLooper._resolve_layer_callback": lambda self: layer_cb(self) or events,
            "ModuleLooper._resolve_subset_callback": lambda self: subset_cb(self) or events,
            "LoopExtensions.publish": observed, "LoopExtensions.start": started}

