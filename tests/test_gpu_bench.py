"""The GPU benchmark's reload step, without a GPU: the order its targets run in."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_bench  # noqa: E402


def _ckpt(tmp_path, name, qcfg):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"quantization_config": qcfg}))
    return str(d)


def test_every_checkpoints_reload_kernel_runs_before_the_extra_kernels(tmp_path):
    # a time limit cuts the speed step from the end: the reload column must come first
    ckpts = [("gptq", "gptq", _ckpt(tmp_path, "g", {"sym": False})),
             ("awq", "awq", _ckpt(tmp_path, "a", {})),
             ("rtn", "gptq", _ckpt(tmp_path, "r", {"sym": False})),
             ("awq-llmc", "compressed-tensors", _ckpt(tmp_path, "c", {}))]
    t = [(m, k) for m, k, _ in gpu_bench.speed_targets(ckpts, tmp_path / "fp16", cc=9.0)]
    assert t[0] == ("fp16", "fp16")
    # Hopper, allow_jit: asymmetric gptq cannot use Marlin, so ExLlamaV2
    assert t[1:5] == [("gptq", "exllama_v2"), ("awq", "marlin"), ("rtn", "exllama_v2"),
                      ("awq-llmc", "compressed")]
    assert t[5:] == [("gptq", "torch"), ("awq", "torch"), ("awq-llmc", "dequantized")]


def test_below_ampere_the_reload_kernel_is_the_no_build_one(tmp_path):
    ckpts = [("gptq", "gptq", _ckpt(tmp_path, "g", {"sym": True}))]
    t = [(m, k) for m, k, _ in gpu_bench.speed_targets(ckpts, tmp_path / "fp16", cc=7.5)]
    assert t == [("fp16", "fp16"), ("gptq", "torch"), ("gptq", "exllama_v2")]
