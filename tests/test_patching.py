"""qrecipe/backends/patching.py: the library functions the gptqmodel adapter replaces for one
call come back however the call ends, and a missing one stops before anything is replaced."""
from __future__ import annotations

import types

import pytest

from qrecipe.backends.patching import patched


class _Lib:
    def step(self):
        return "library"


def test_replaced_inside_restored_after_an_error():
    mod = types.ModuleType("lib")  # a module, as gptqmodel_shards patches one
    mod.helper = lambda: "library"
    with pytest.raises(RuntimeError):
        with patched({(_Lib, "step"): lambda self: "qrecipe", (mod, "helper"): lambda: "qrecipe"}):
            assert _Lib().step() == "qrecipe" and mod.helper() == "qrecipe"
            raise RuntimeError("quantize() failed")
    assert _Lib().step() == "library" and mod.helper() == "library"


def test_a_missing_attribute_replaces_nothing():
    with pytest.raises(KeyError):
        with patched({(_Lib, "step"): lambda self: "qrecipe", (_Lib, "absent"): lambda self: 0}):
            pass
    assert _Lib().step() == "library" and not hasattr(_Lib, "absent")
