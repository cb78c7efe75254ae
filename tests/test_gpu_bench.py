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
    assert t[0] == ("fp16", "fp16") and t[1] == ("fp16", gpu_bench.NO_GEMM)  # the step's floor
    t = t[1:]
    # Hopper, allow_jit, the shipped measurements: asymmetric gptq cannot use GPTQ Marlin and
    # ExLlamaV2 has no valid figure, so AWQ Marlin on the rewritten layout (1.47x, over the torch
    # kernel's 0.45x), for compressed-tensors int4 too (over its own kernel's 1.00x); the torch
    # kernel and ExLlamaV2 among the extra kernels
    assert t[1:6] == [("gptq", "awq_marlin"), ("awq", "marlin"), ("rtn", "awq_marlin"),
                      ("awq-llmc", "awq_marlin"), ("fp8-llmc", "compressed")]
    assert t[6:] == [("gptq", "torch"), ("gptq", "exllama_v2"), ("awq", "torch"),
                     ("awq-llmc", "compressed"), ("awq-llmc", "dequantized"),
                     ("awq-llmc", "exllama_v2"), ("fp8-llmc", "dequantized")]


def test_below_ampere_the_reload_kernel_is_the_no_build_one(tmp_path):
    ckpts = [("gptq", "gptq", _ckpt(tmp_path, "g", {"sym": True}))]
    t = [(m, k) for m, k, _ in gpu_bench.speed_targets(ckpts, tmp_path / "fp16", cc=7.5)]
    assert t == [("fp16", "fp16"), ("fp16", gpu_bench.NO_GEMM), ("gptq", "torch"),
                 ("gptq", "exllama_v2")]


def test_only_selects_jobs_and_their_builds():
    import argparse
    a = argparse.Namespace(only="gptq-gptqmodel")
    jobs = gpu_bench.selected(a)
    assert [gpu_bench._label(*j[:3]) for j in jobs] == ["gptq-gptqmodel-backend_default",
                                                       "gptq-gptqmodel-qrecipe"]
    assert gpu_bench._builds(jobs) == ("gptq_block", "pack_block_cpu")
    every = gpu_bench.selected(argparse.Namespace(only=""))
    assert [j for j in gpu_bench.JOBS if j not in every] == [gpu_bench.JOBS[0]]  # the cold job
    # every build but bfloat16's Marlin, which only the cold job (a bfloat16 profile) reloads with
    assert gpu_bench._builds(every) == gpu_bench.PREBUILD[:-1]
    assert gpu_bench.PREBUILD[-1] == "marlin_bf16"


def test_the_cold_job_runs_first_and_its_kernels_build_before_the_others():
    """The cold job is opt-in; its kernels lead the build queue, which holds the rest until the
    job is done (no nvcc build shares the CPU with it)."""
    import argparse
    jobs = gpu_bench.selected(argparse.Namespace(only="cold,gptq-gptqmodel,awq-llmcompressor,speed"))
    assert [gpu_bench._label(*j[:3]) for j in jobs][:2] == ["cold-gptqmodel-cli",
                                                            "gptq-gptqmodel-backend_default"]
    # what the job calls on h100_80gb as shipped (bfloat16, allow_jit): GPTQ's block update,
    # and Marlin's bfloat16 build for AWQ Marlin, `auto`'s measured pick for its asymmetric
    # checkpoint (cold_start.cold_builds: qrecipe's own resolution)
    assert gpu_bench._cold_builds(jobs) == ("gptq_block", "marlin_bf16")
    assert gpu_bench._builds(jobs)[:3] == ("gptq_block", "marlin_bf16", "pack_block_cpu")
    assert gpu_bench._cold_builds(gpu_bench.selected(argparse.Namespace(only="gptq"))) == ()


def test_the_build_queue_holds_past_the_cold_job_s_kernels(tmp_path, monkeypatch):
    built = []

    def fake_start(spec, work, env):
        built.append(spec["ext"])
        return None, 0.0
    monkeypatch.setattr(gpu_bench, "start_child", fake_start)
    monkeypatch.setattr(gpu_bench, "finish_child", lambda *a: {"ok": True, "build_s": 1.0})
    q = gpu_bench.BuildQueue(tmp_path, {}, ("gptq_block", "exllamav2", "marlin_fp16"),
                             ("gptq_block", "exllamav2"))
    assert q.wait("exllamav2")["ok"]
    assert not q.events["marlin_fp16"].wait(0.2) and built == ["gptq_block", "exllamav2"]
    q.go.set()
    assert q.wait("marlin_fp16")["ok"] and built[-1] == "marlin_fp16"


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


def _goal_doc(layers):
    lib = {"load": 1.0, "quantize": 30.0, "save": 2.0}
    gptq_q = {**_row("qrecipe", 60.0, lib, share=0.02), "per_layer": [1.0, 1.0],
              "kernel": "exllama_v2", "model_dir": "q"}
    gptq_d = {**_row("backend_default", 130.0, lib), "per_layer": [3.0, 3.0]}
    awq = {"method": "awq", "backend": "llmcompressor", "runner": "qrecipe", "process_s": 95.0,
           "lib_s": {"load": 2.0, "quantize": 130.0, "save": 5.0}, "per_layer": [2.0],
           "qrecipe_overhead": {"qrecipe_own_share": 0.05}, "kernel": "exllama_v2"}
    cold = {"method": "cold", "backend": "gptqmodel", "runner": "cli", "process_s": 49.6,
            "per_layer": [1.5, 0.8], "overhead": {"qrecipe_own_share": 0.045}}
    b = {"decode_tokens_per_s": 100.0, "decode_ms_per_step": 10.0, "prefill_tokens_per_s": 1e4,
         "decode_path": "graph"}
    speed = [{"method": m, "kernel": k, "load_s": 1.0, "b8": b,
              "b1": {**b, "decode_tokens_per_s": tok}}
             for m, k, tok in (("fp16", "fp16", 100.0), ("gptq", "exllama_v2", 300.0),
                               ("awq-llmc", "exllama_v2", 200.0))]
    return {"shape": {"layers": layers}, "rows": [cold, gptq_d, gptq_q, awq], "speed": speed}


def test_the_goal_table_reads_each_goal_off_the_rows():
    """Each goal from its own row: AWQ's quantize seconds, GPTQ's per-layer ratio, the cold
    job's wall, decode on the kernel auto picked, each job's own share; met only at 32 layers.
    The cold job stays out of the qrecipe-against-default ratios."""
    import gpu_bench_table
    doc = _goal_doc(32)
    gpu_bench_table.derive(doc)
    by = {what: (v, met) for what, v, _, met in gpu_bench_table.goals(doc)}
    assert by["AWQ via llm-compressor: quantize s of the 32 layers"] == (130.0, "no")
    assert by["GPTQ via gptqmodel: per layer, qrecipe / GPTQModel's defaults"] == (0.333, "yes")
    assert by["the cold GPTQ job: wall s, kernels prebuilt"] == (49.6, "yes")
    assert by["decode at batch 1 / fp16, the kernel `auto` picks (gptq on exllama_v2)"] == \
        (3.0, "yes")
    assert by["decode at batch 1 / fp16, the kernel `auto` picks (awq-llmc on exllama_v2)"] == \
        (2.0, "no")
    own = "qrecipe's own share of the job (metrics.json)"
    assert by[f"{own} (cold-gptqmodel-cli)"] == (0.045, "no")
    assert by[f"{own} (gptq-gptqmodel-qrecipe)"] == (0.02, "yes")
    assert by[f"{own} (awq-llmcompressor-qrecipe)"] == (0.05, "no")
    assert not any(k.startswith("cold") for k in doc["ratios"])
    md = gpu_bench_table.markdown(doc)
    assert "| the cold GPTQ job: wall s, kernels prebuilt | 49.6 | <= 60 | yes |" in md
    doc4 = _goal_doc(4)
    gpu_bench_table.derive(doc4)
    assert {m for *_, m in gpu_bench_table.goals(doc4)} == {"n/a (4 layers)"}


def test_the_goal_table_gives_the_decode_ceiling_where_the_floor_was_measured():
    """With the fp16 model also timed without its GEMMs, each decode goal row has a ceiling
    row: fp16's 10 ms step, 4 ms of it not GEMMs, 4-bit GEMM weights a quarter of fp16's:
    10 / (4 + 6 / 4) = 1.82x, under 2.5x whatever the kernel."""
    import gpu_bench_table
    doc = _goal_doc(32)
    for s in doc["speed"]:
        s["weights_bytes"] = 11e9 if s["kernel"] == "fp16" else 3.5e9
    free = {**doc["speed"][0], "kernel": gpu_bench.NO_GEMM, "weights_bytes": 1e9}
    free["b1"] = {**free["b1"], "decode_tokens_per_s": 250.0}
    doc["speed"].insert(1, free)
    gpu_bench_table.derive(doc)
    by = {what: (v, met) for what, v, _, met in gpu_bench_table.goals(doc)}
    ceiling = [(k, v) for k, v in by.items() if k.startswith("its ceiling")]
    assert [k.rsplit("(", 1)[1] for k, _ in ceiling] == ["gptq on exllama_v2)",
                                                       "awq-llmc on exllama_v2)"]
    assert {v for _, v in ceiling} == {(1.818, "no")}
    md = gpu_bench_table.markdown(doc)
    assert "the rest (floor, graph) 4.00 ms" in md and "| gptq/exllama_v2 | 3.33 |" in md
