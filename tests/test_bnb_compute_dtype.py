"""bitsandbytes' 4-bit compute dtype: `auto` follows the dtype the model loads in (a different one
casts activations in every layer; measured on an H200: docs/benchmarks.md, bnb_decode.py)."""
from types import SimpleNamespace

from conftest import compose

from qrecipe.backends.bitsandbytes import compute_dtype


def test_auto_follows_a_half_model_dtype_and_an_explicit_value_wins():
    auto = SimpleNamespace(compute_dtype="auto")
    assert compute_dtype(auto, "float16") == "float16"
    assert compute_dtype(auto, "bfloat16") == "bfloat16"
    assert compute_dtype(auto, "float32") == "bfloat16"  # CPU profiles: as before
    assert compute_dtype(auto, "auto") == "bfloat16"
    assert compute_dtype(SimpleNamespace(compute_dtype="float32"), "float16") == "float32"


def test_shipped_bnb_method_uses_auto():
    assert compose(["method=bnb"]).method.compute_dtype == "auto"
