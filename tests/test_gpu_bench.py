"""The GPU benchmark without a GPU: the order its reload targets run in, which jobs and builds
--only selects, and --set/--tag."""
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


_CT_W4_ASYM = {"format": "pack-quantized", "config_groups": {"group_0": {
    "format": "pack-quantized", "targets": ["Linear"], "weights": {
        "num_bits": 4, "type": "int", "symmetric": False, "strategy": "group",
        "group_size": 128}}}}


def test_every_checkpoints_reload_kernel_runs_before_the_extra_kernels(tmp_path):
    # a time limit cuts the speed step from the end: the reload column must come first
    ckpts = [("gptq", "gptq", _ckpt(tmp_path, "g", {"sym": False})),
             ("awq", "awq", _ckpt(tmp_path, "a", {})),
             ("rtn", "gptq", _ckpt(tmp_path, "r", {"sym": False})),
             ("awq-llmc", "compressed-tensors", _ckpt(tmp_path, "c", _CT_W4_ASYM)),
             ("fp8-llmc", "compressed-tensors", _ckpt(tmp_path, "f", {}))]
    t = [(m, k) for m, k, _ in gpu_bench.speed_targets(ckpts, tmp_path / "fp16", cc=9.0)]
    assert t[0] == ("fp16", "fp16")
    # Hopper, allow_jit: asymmetric gptq cannot use Marlin, so ExLlamaV2
    # compressed-tensors int4: rewritten for ExLlamaV2; a scheme that cannot be: its own kernel
    assert t[1:6] == [("gptq", "exllama_v2"), ("awq", "marlin"), ("rtn", "exllama_v2"),
                      ("awq-llmc", "exllama_v2"), ("fp8-llmc", "compressed")]
    assert t[6:] == [("gptq", "torch"), ("awq", "torch"), ("awq-llmc", "compressed"),
                     ("awq-llmc", "dequantized"), ("fp8-llmc", "dequantized")]


def test_below_ampere_the_reload_kernel_is_the_no_build_one(tmp_path):
    ckpts = [("gptq", "gptq", _ckpt(tmp_path, "g", {"sym": True}))]
    t = [(m, k) for m, k, _ in gpu_bench.speed_targets(ckpts, tmp_path / "fp16", cc=7.5)]
    assert t == [("fp16", "fp16"), ("gptq", "torch"), ("gptq", "exllama_v2")]


def test_only_selects_jobs_and_their_builds():
    import argparse
    a = argparse.Namespace(only="gptq-gptqmodel")
    jobs = gpu_bench.selected(a)
    assert [gpu_bench._label(*j[:3]) for j in jobs] == ["gptq-gptqmodel-backend_default",
                                                       "gptq-gptqmodel-qrecipe"]
    assert gpu_bench._builds(jobs) == ("gptq_block", "pack_block_cpu")
    every = gpu_bench.selected(argparse.Namespace(only=""))
    assert len(every) == len(gpu_bench.JOBS) and gpu_bench._builds(every) == gpu_bench.PREBUILD


def test_the_speed_step_waits_only_for_the_builds_its_kernels_need():
    """A bnb-only run builds nothing (a device session once lost 5 minutes waiting for Marlin
    and ExLlamaV2 there); the full run needs both."""
    import argparse
    bnb = gpu_bench.selected(argparse.Namespace(only="bnb4-bitsandbytes,speed"))
    assert gpu_bench.speed_builds(bnb) == () and gpu_bench._builds(bnb) == ()
    every = gpu_bench.selected(argparse.Namespace(only=""))
    assert set(gpu_bench.speed_builds(every)) == {"marlin_fp16", "exllamav2"}
    ct = gpu_bench.selected(argparse.Namespace(only="gptq-llmcompressor,speed"))
    assert set(gpu_bench.speed_builds(ct)) == {"marlin_fp16", "exllamav2"}


def _row(runner, process_s, lib, imports=None, share=None):
    r = {"method": "gptq", "backend": "gptqmodel", "runner": runner, "process_s": process_s,
         "lib_s": lib, "per_layer": [1.0, 1.0]}
    if imports is not None:
        r["imports_s"] = imports
    if share is not None:
        r["qrecipe_overhead"] = {"qrecipe_own_share": share}
    return r


def test_the_overhead_leaves_out_the_library_imports_both_runners_pay():
    import gpu_bench_table
    lib = {"load": 1.0, "quantize": 20.0, "save": 2.0}
    doc = {"shape": {"layers": 2}, "rows": [
        _row("backend_default", 40.0, lib, {"torch": 5.0, "backend": 12.0}),
        # qrecipe's imports ran 2 s slower in its process; it adds 1 s of its own
        _row("qrecipe", 43.0, {**lib, "import": 7.0},
             {"torch": 5.0, "transformers": 7.0, "backend": 7.0}, share=0.03)]}
    gpu_bench_table.derive(doc)
    r = doc["ratios"]
    assert r["gptq/gptqmodel: qrecipe overhead s (own s less imports, qrecipe - default)"] == 1.0
    assert r["gptq/gptqmodel: qrecipe overhead share, metrics.json (2 layers)"] == 0.03
    # 30 more layers of 1 s: the job 73 s, the library's calls 53 s
    assert r["gptq/gptqmodel: qrecipe overhead share of the job, 32 layers (projected)"] == \
        round(1 / 73, 3)
    assert r["gptq/gptqmodel: qrecipe overhead share of the library's load+quantize+save, "
             "32 layers (projected)"] == round(1 / 53, 3)
    assert "own s (of it imports)" in gpu_bench_table.markdown(doc)
    # a run from before the imports were timed: own s alone
    for row in doc["rows"]:
        row.pop("imports_s")
        row.pop("own_less_imports_s")
    gpu_bench_table.derive(doc)
    assert doc["ratios"]["gptq/gptqmodel: qrecipe overhead s (own s, qrecipe - default)"] == 3.0


def test_set_overrides_every_qrecipe_job_and_needs_a_tag(tmp_path):
    """--set KEY=VALUE reaches each qrecipe job's overrides (last wins over the bench's own
    float16); without --tag the command refuses before any work: the second invocation's jobs
    would land in the first one's finished folders."""
    import subprocess
    import sys

    from gpu_bench_jobs import qrecipe_overrides
    ov = qrecipe_overrides({"method": "awq", "backend": "llmcompressor", "model": "m",
                            "samples": 4, "seq_len": 8, "qcache": "c", "name": "awq-b32bf",
                            "overrides": ["hardware.dtype=bfloat16"]})
    assert ov.index("hardware.dtype=bfloat16") > ov.index("hardware.dtype=float16")
    r = subprocess.run([sys.executable, str(Path(gpu_bench.__file__)), "--tokenizer",
                        str(tmp_path), "--work", str(tmp_path / "w"), "--set", "a=b"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--set needs --tag" in r.stderr, r.stderr
    assert not (tmp_path / "w").exists()
