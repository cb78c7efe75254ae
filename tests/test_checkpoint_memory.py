"""Host RAM per quantized layer with gptqmodel's per-layer checkpoints (issue 9).

gptqmodel 7.6's checkpoint commit copies the next layer's inputs to CPU inside a recursive
closure, a reference cycle: without a collection the copies of every layer pile up (2.5 GiB per
layer on a 13B). The automatic collector is disabled here so the result does not depend on when
Python happens to collect: what is unreachable-but-alive is exactly what would pile up."""
from __future__ import annotations

import gc
from contextlib import contextmanager

import pytest


def _codec_closures() -> int:
    """How many ContinuationCodec.dumps closures are garbage that nothing has freed yet
    (each one holds the CPU copies of the tensors it serialized). Frees them."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sum(1 for o in gc.garbage
                   if getattr(o, "__qualname__", "") == "ContinuationCodec.dumps.<locals>.encode")
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()  # DEBUG_SAVEALL kept the cycles instead of freeing them: free them now


@contextmanager
def _no_automatic_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_codec_leaves_its_tensor_copies_in_a_cycle():
    """The library behaviour the workaround exists for (gptqmodel pinned at 7.6.0). If this
    fails after an upgrade, the cycle is gone and qrecipe/backends/gptqmodel/collect.py can go."""
    import torch
    from gptqmodel.looper.continuation import ContinuationCodec

    with _no_automatic_gc():
        ContinuationCodec.dumps({"cache": [torch.ones(4, 8)]})
        assert _codec_closures() == 1


@pytest.mark.e2e
def test_no_activation_copies_survive_a_checkpoint_commit(tiny_model_dir, tmp_path,
                                                          monkeypatch):
    """Quantize the 2-layer tiny Llama with checkpoints; each time the codec serializes,
    the copies of its previous call must already be freed."""
    import torch
    from gptqmodel.looper.continuation import ContinuationCodec
    from omegaconf import OmegaConf

    from qrecipe.backends.base import QuantizeRequest
    from qrecipe.backends.gptqmodel.adapter import GPTQModelBackend

    left_over = []
    dumps = ContinuationCodec.__dict__["dumps"]

    def counting_dumps(state):
        left_over.append(_codec_closures())  # garbage from the commits before this one
        return dumps.__func__(state)

    torch.manual_seed(0)
    req = QuantizeRequest(
        model_dir=tiny_model_dir, out_dir=tmp_path / "out", bits=4, group_size=32,
        method=OmegaConf.create({"name": "gptq", "sym": True, "desc_act": False,
                                 "damp_percent": 0.01, "true_sequential": True}),
        device="cpu", dtype="float32",
        calibration=[torch.randint(0, 1000, (64,)) for _ in range(8)],
        hardware=OmegaConf.create({"offload_to_disk": True, "calib_batch_size": 1}),
        checkpoint_dir=tmp_path / "ckpt")
    monkeypatch.setattr(ContinuationCodec, "dumps", staticmethod(counting_dumps))
    with _no_automatic_gc():
        result = GPTQModelBackend().quantize(req)
    assert result.details["layer_checkpoints"]
    # the checkpoint identity (a hash of the calibration inputs), then one commit per layer
    assert len(left_over) == 3
    assert left_over == [0, 0, 0], "a checkpoint's CPU copies were not freed"


def test_frozen_heap_still_collects_what_the_call_creates_and_unfreezes():
    """frozen_heap (gptqmodel_gc.py) keeps full collections cheap by freezing what is alive when
    quantize() starts; a cycle made inside the call must still be collected there, and the
    freeze must end with the call, also when it raises."""
    import weakref

    from qrecipe.backends.gptqmodel.collect import frozen_heap

    class Node:
        pass

    before = gc.get_freeze_count()
    with _no_automatic_gc(), pytest.raises(RuntimeError):
        with frozen_heap():
            assert gc.get_freeze_count() > before  # the objects alive now are frozen
            a, b = Node(), Node()
            a.other, b.other = b, a  # a reference cycle made during the call
            alive = weakref.ref(a)
            del a, b
            gc.collect()
            assert alive() is None  # collected although everything older is frozen
            raise RuntimeError("quantize() failed")
    assert gc.get_freeze_count() == 0
