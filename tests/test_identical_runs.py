"""The same recipe twice on the tiny random Llama, through `python -m qrecipe`, gives the same
bytes, the second time with caching off. Kept out of test_e2e.py so that pytest-xdist (--dist
loadfile) runs it beside the SmolLM2 runs instead of after them."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("method,backend", [("gptq", "gptqmodel"), ("rtn", "gptqmodel"),
                                            ("awq", "gptqmodel"), ("gptq", "llmcompressor")])
def test_same_recipe_twice_gives_identical_weights_on_tiny_model(method, backend,
                                                                 tiny_model_dir, tmp_path):
    args = [f"method={method}", f"method.backend={backend}", "model=local",
            f"model.path={tiny_model_dir}", "bits=w4", "bits.group_size=32", "calibration=pydoc",
            "calibration.num_samples=8", "calibration.seq_len=64", "eval.enabled=false"]
    fps = []
    # The second run has caching off: a fresh private cache must not change a single byte.
    for i, extra in enumerate([[], ["cache.enabled=false"]]):
        p = run_cli([*args, *extra, f"hydra.run.dir={tmp_path}/{i}"])
        assert p.returncode == 0, p.stderr[-4000:]
        fps.append(json.loads((tmp_path / str(i) / "fingerprints.json").read_text()))
    assert fps[0] == fps[1]
    assert len(fps[0]["quantized_weights_sha256"]) == 64
