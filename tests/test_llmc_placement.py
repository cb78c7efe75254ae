"""Where llm-compressor's run keeps the weights and the activations between layers
(qrecipe/backends/llmcompressor/placement.py). The GPU side, byte-identical checkpoints either
way, is tests/test_gpu.py::test_llmcompressor_placement_on_the_gpu_changes_no_byte."""
from __future__ import annotations

import pytest
from conftest import compose

from qrecipe.backends.llmcompressor import placement

torch = pytest.importorskip("torch")


@pytest.fixture()
def checkpoint(tmp_path):
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(4, 8, dtype=torch.float32), "b": torch.zeros(3, dtype=torch.int64)},
              str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"c": torch.zeros(10, dtype=torch.bfloat16)},
              str(tmp_path / "model-00002-of-00002.safetensors"))
    return tmp_path


def test_weight_bytes_counts_floats_in_the_jobs_dtype_and_the_rest_at_their_width(checkpoint):
    assert placement.weight_bytes(checkpoint, "bfloat16") == 32 * 2 + 3 * 8 + 10 * 2
    assert placement.weight_bytes(checkpoint, "float32") == 32 * 4 + 3 * 8 + 10 * 4


def test_activations_stay_on_the_gpu_only_when_not_streamed():
    gpu = {"stream_activations": False}
    assert placement.activations(gpu, "cuda", "awq") == {"sequential_offload_device": "cuda"}
    assert placement.activations({"stream_activations": True}, "cuda", "awq") == {}
    assert placement.activations({}, "cuda", "awq") == {}  # the schema's default streams
    assert placement.activations(gpu, "cpu", "awq") == {}
    assert placement.activations(gpu, "cuda", "gptq") == {}  # measured for AWQ only


def test_the_model_stays_in_cpu_ram_without_the_key_or_a_gpu(checkpoint):
    def never():
        raise AssertionError("asked for the GPU's free memory")
    assert placement.model_device({}, "cuda", checkpoint, "bfloat16", "awq", never) == (
        None, "hardware.model_on_gpu is false")
    assert placement.model_device({"model_on_gpu": True}, "cpu", checkpoint, "bfloat16", "awq",
                                  never) == (None, "runs on cpu")
    assert placement.model_device({"model_on_gpu": True}, "cuda", checkpoint, "bfloat16", "gptq",
                                  never) == (None, "measured for awq only")


def test_a_model_over_the_share_of_free_memory_stays_in_cpu_ram(checkpoint):
    need = placement.weight_bytes(checkpoint, "bfloat16")
    hw = {"model_on_gpu": True}
    device, why = placement.model_device(hw, "cuda", checkpoint, "bfloat16", "awq",
                                         lambda: 2 * need - 2)
    assert device is None and "exceed 50% of the GPU's free" in why
    assert placement.model_device(hw, "cuda", checkpoint, "bfloat16", "awq",
                                  lambda: 2 * need)[0] == "cuda"


@pytest.mark.parametrize("profile", ["h100_80gb", "a100_80gb"])
def test_the_80gb_profiles_keep_the_model_and_activations_on_the_gpu(profile):
    hw = compose([f"hardware={profile}"]).hardware
    assert hw.model_on_gpu is True and hw.stream_activations is False


def test_other_profiles_load_into_cpu_ram():
    assert compose([]).hardware.model_on_gpu is False
    assert compose(["hardware=rtx4090_24gb"]).hardware.model_on_gpu is False


@pytest.mark.parametrize("model,resident", [("llama2_7b", True), ("llama2_70b", False)])
def test_plan_counts_the_model_on_the_gpu_where_it_fits(model, resident):
    """qrecipe plan on h100_80gb: a 7B (13.5 GB) is planned on the GPU, with the resident AWQ
    measurement and the whole model in the peak; a 70B (138 GB) in CPU RAM, with the measurement
    made that way."""
    from qrecipe.inputs.shapes import read_shape
    from qrecipe.plan import estimate as est
    from qrecipe.plan.build import quantize_figures
    from qrecipe.plan.hardware import profile
    from qrecipe.plan.times import load_measurements

    shape, p = read_shape(model), profile("h100_80gb")
    fig = quantize_figures(shape, "w4", "awq", "llmcompressor", p, load_measurements(), 128, 512,
                           128)
    layer = est.quantize_peak_bytes(shape, "w4", "awq", "llmcompressor", "cuda", 128, 512)
    weights = est.total_params(shape) * 2
    assert fig["peak_bytes"] == layer + (weights if resident else 0)
    assert (fig["host_bytes"] < weights) is resident
    assert ("bf16-batch32-resident" in fig["time_source"]) is resident, fig["time_source"]
    gptq = quantize_figures(shape, "w4", "gptq", "llmcompressor", p, load_measurements(), 128,
                            512, 128)  # AWQ only: GPTQ's model stays in CPU RAM
    assert gptq["peak_bytes"] == est.quantize_peak_bytes(shape, "w4", "gptq", "llmcompressor",
                                                         "cuda", 128, 512)
