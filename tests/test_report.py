"""Sweep summaries rebuilt from run directories; incomplete runs are flagged, not dropped."""
from __future__ import annotations

import csv

from qrecipe.record import outputs
from qrecipe.report.runs import find_runs
from qrecipe.report.runs import main as report_main


def fake_run(d, bits, ppl, complete=True, error=None):
    (d / ".hydra").mkdir(parents=True)
    (d / "recipe.lock.yaml").write_text(
        f"recipe_name: r\nmethod: {{name: gptq, backend: gptqmodel}}\n"
        f"bits: {{width: {bits}, group_size: 64}}\n")
    if error:
        outputs.write_json(d / outputs.ERROR, {"status": "user_error", "error": error})
        return
    outputs.write_json(d / "metrics.json", {
        "recipe": "r", "method": "gptq", "backend": "gptqmodel", "bits": bits,
        "group_size": 64, "size": {"model_dir_bytes": bits * 2**20,
                                   "footprint_bytes": bits * 2**21},
        "eval": {"fp": {"ppl": 30.0}, "quantized": {"ppl": ppl}, "delta_ppl": ppl - 30},
        "time_s": {"quantize": 10.0, "evaluate": 5.0}, "peak_rss_bytes": {"quantize": 2**30}})
    if complete:
        outputs.write_manifest(d)


def test_report_rebuilds_table_and_flags_incomplete(tmp_path, capsys):
    root = tmp_path / "sweep"
    fake_run(root / "0_bits=w2", 2, 900.0)
    fake_run(root / "1_bits=w4", 4, 33.0)
    fake_run(root / "2_bits=w8", 8, 30.1, complete=False)
    fake_run(root / "3_bits=w3", 3, 0, error="bits.width=3: not supported")
    assert len(find_runs([root])) == 4
    assert report_main([str(root)]) == 0
    rows = list(csv.DictReader(open(root / "summary.csv")))
    by_run = {r["run"]: r for r in rows}
    assert by_run["1_bits=w4"]["status"] == "complete"
    assert float(by_run["1_bits=w4"]["delta_ppl"]) == 3.0
    assert by_run["2_bits=w8"]["status"] == "incomplete"
    assert by_run["3_bits=w3"]["status"] == "user_error"
    assert "not supported" in by_run["3_bits=w3"]["error"]
    md = (root / "summary.md").read_text()
    assert "Runs that did not complete" in md and "2_bits=w8" in md
    for png in ("ppl_vs_bits.png", "memory.png", "pareto.png"):
        assert (root / png).stat().st_size > 10_000
    err = capsys.readouterr().err
    assert "skipped 2_bits=w8: incomplete" in err


def test_manifest_detects_tampering(tmp_path):
    fake_run(tmp_path / "r", 4, 33.0)
    assert outputs.verify_manifest(tmp_path / "r") == []
    (tmp_path / "r" / "metrics.json").write_text("{}")
    assert outputs.verify_manifest(tmp_path / "r") == ["metrics.json"]


def test_report_cli_rejects_missing_dir(tmp_path):
    assert report_main([str(tmp_path / "nope")]) == 2


def _metrics(ppl=37.45, problem=None, status="met", q_speed=30.0, kernel="torch"):
    q = {"ppl": None if problem else ppl, "speed": {"decode_tokens_per_s": q_speed}}
    if problem:
        q["ppl_problem"] = problem
    return {
        "recipe": "smollm2_gptq_w4", "method": "gptq", "backend": "gptqmodel", "bits": 4,
        "group_size": 64, "format": "gptq",
        "model": {"path": "m", "architecture": "llama", "layers": 30},
        "size": {"model_dir_bytes": int(112.7 * 2**20), "footprint_bytes": 2**27},
        "eval": {"protocol": {"dataset": "wikitext2_raw_test.txt", "windows": 8, "seq_len": 512,
                              "stride": 512, "scored_tokens": 4088},
                 "fp": {"ppl": 30.64, "speed": {"decode_tokens_per_s": 26.0}}, "quantized": q,
                 "delta_ppl": None if problem else ppl - 30.64},
        "kernel": {"resolved": kernel, "device": "cpu", "loaded_modules": {"TorchLinear": 210}},
        "dtype": {"why": "model.dtype=bfloat16 computes in float32 on this CPU"},
        "time_s": {"quantize": 100.0}, "peak_rss_bytes": {"quantize": 2**30},
        "expectations": {"status": status, "checks": [
            {"metric": "ppl", "expected": 38.05, "tolerance": 1.0, "got": ppl,
             "status": status}]}}


def test_run_report_says_a_problem_never_a_saturated_number(tmp_path):
    from qrecipe.report.run import write_run_report
    problem = "perplexity not finite: the quantized model's logits overflow in float16"
    write_run_report(tmp_path, _metrics(problem=problem, status="not comparable"), {})
    md = (tmp_path / "report.md").read_text()
    assert f"| quantized | {problem} |" in md and "65504" not in md
    assert "Δppl vs fp: not computed" in md
    assert md.count("computes in float32 on this CPU") == 1  # the dtype reason, once


def test_report_names_why_the_kernel_is_slower_than_fp(tmp_path):
    from qrecipe.report.run import write_run_report
    write_run_report(tmp_path, _metrics(q_speed=1.1), {})
    md = (tmp_path / "report.md").read_text()
    assert "Kernel: `torch`" in md
    assert "Decodes at 1.1 tok/s against 26.0 for the original: its torch kernel " \
           "dequantizes every weight on every forward" in md
    write_run_report(tmp_path, _metrics(q_speed=40.0, kernel="torch_aten"), {})
    assert "Decodes at" not in (tmp_path / "report.md").read_text()


def test_final_lines_tell_the_verdict_and_where_the_report_is(tmp_path):
    from qrecipe.report.run import final_lines
    lines = final_lines(tmp_path, _metrics(), 312.4)
    assert lines == ["result: met", "  perplexity 37.4500, fp 30.6400, Δppl +6.8100",
                     "  size on disk 112.7 MB (model/); decode 30.0 tok/s (fp 26.0), "
                     "kernel torch", "  total time 5m 12s", f"  report: {tmp_path}/report.md"]
    missed = final_lines(tmp_path, _metrics(ppl=45.0, status="missed"), 1)
    assert missed[0] == "result: not met: ppl 45.0 (expected 38.05 ±1.0)"
    problem = "perplexity not a measurement: the quantized model is degenerate"
    bad = final_lines(tmp_path, _metrics(problem=problem, status="none"), 1)
    assert bad[:2] == ["result: no expectations", f"  {problem}, fp 30.6400"]


def test_final_lines_name_imports_that_had_no_bytecode_cache(tmp_path):
    """An image without .pyc (PYTHONDONTWRITEBYTECODE, a read-only install) compiles the
    libraries in every job: the last lines say which, how long, and the one-time fix."""
    from qrecipe.report.run import final_lines
    m = _metrics()
    m["overhead"] = {"imports_s": {"transformers": 10.51, "torch": 2.8},
                     "uncached_bytecode": ["transformers"]}
    lines = final_lines(tmp_path, m, 82.3)
    assert lines[-2].startswith("  imports: transformers took 10.5 s with no bytecode cache")
    assert "python -m compileall" in lines[-2] and lines[-1].startswith("  report: ")
    m["overhead"]["uncached_bytecode"] = []
    assert not any("bytecode" in ln for ln in final_lines(tmp_path, m, 82.3))


def test_final_lines_name_the_kernels_the_job_had_to_build(tmp_path):
    """A job that compiled kernels (in the background) says which and how to prebuild them;
    one that found them all in the cache, or whose child built nothing, says nothing."""
    from qrecipe.report.run import final_lines
    m = _metrics()
    m["kernel_builds"] = {"kernels": [
        {"name": "gptq_block", "status": "built", "seconds": 21.4},
        {"name": "exllamav2", "status": "built", "seconds": 34.9},
        {"name": "marlin_bf16", "status": "not built"}], "stopped": True}
    lines = final_lines(tmp_path, m, 95.0)
    assert lines[-2] == ("  kernels: this job built gptq_block, exllamav2 (56 s, in the "
                         "background); python -m qrecipe kernels build hardware=PROFILE "
                         "prebuilds them once per machine image (docs/gpu.md)")
    m["kernel_builds"]["kernels"] = [{"name": "gptq_block", "status": "already built",
                                      "seconds": 0.2}]
    assert not any("kernels:" in ln for ln in final_lines(tmp_path, m, 95.0))


def test_bytecode_cached_tells_a_compiled_import_from_one_compiled_every_time(tmp_path):
    import os
    import subprocess
    import sys
    (tmp_path / "qr_probe_mod.py").write_text("X = 1\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import qr_probe_mod\n"
            "from qrecipe.telemetry.overhead import bytecode_cached\n"
            "print(bytecode_cached('qr_probe_mod'), bytecode_cached('sys'), "
            "bytecode_cached('not_imported_here'))")

    def probe(**env):
        base = {k: v for k, v in os.environ.items()  # this shell may set them (CI machines do)
                if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                           text=True, env={**base, **env}, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    empty = tmp_path / "no-pycache"
    empty.mkdir()
    assert probe(PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(empty)) == \
        ["False", "None", "None"]
    assert probe()[0] == "True"  # written by this import, read by the next


def test_a_perplexity_problem_is_shown_instead_of_a_number():
    """A w2 run whose logits overflow has ppl null + ppl_problem (qrecipe/evaluation): the sweep
    summary shows the problem in the ppl cell, never a number."""
    from qrecipe.report.runs import summary_markdown

    problem = "perplexity not finite: the quantized model's logits overflow in float16"
    rows = [{"run": "0_bits=w2", "status": "complete", "ppl": None, "ppl_problem": problem,
             "fp_ppl": 30.6, "fp_footprint_mb": 513.0},
            {"run": "1_bits=w4", "status": "complete", "ppl": 38.05, "ppl_problem": None,
             "fp_ppl": 30.6, "fp_footprint_mb": 513.0}]
    text = summary_markdown(rows)
    assert f"| 0_bits=w2 | complete |  |  |  |  |  | {problem} |" in text
    assert "| 38.05 |" in text and "65504" not in text


def test_comparison_columns_family_pareto_where_and_order(tmp_path):
    """The comparison report: each row's family (from what its quantizer read), whether a
    smaller-and-better row exists (pareto), where it was measured, best perplexity first."""
    import json

    from qrecipe.record.outputs import environment
    root = tmp_path / "sweep"
    runs = {"0_rtn": ("rtn", 4, 40.0, None), "1_gptq": ("gptq", 4, 38.0, True),
            "2_fp8": ("fp8", 8, 31.0, False), "3_gptq_w8": ("gptq", 8, 32.0, True)}
    for name, (method, bits, ppl, used) in runs.items():
        d = root / name
        fake_run(d, bits, ppl, complete=False)
        m = json.loads((d / "metrics.json").read_text())
        m.update(method=method, backend="gptqmodel" if method != "fp8" else "llmcompressor")
        if used is not None:
            m["quantize_details"] = {"uses_calibration": used}
        outputs.write_json(d / "metrics.json", m)
        outputs.write_json(d / "env.json", environment({}, "cpu"))
        outputs.write_manifest(d)
    gpu = json.loads((root / "3_gptq_w8" / "env.json").read_text())
    outputs.write_json(root / "3_gptq_w8" / "env.json",
                       {**gpu, "device": "cuda", "gpus": ["NVIDIA H100 80GB HBM3"]})
    outputs.write_manifest(root / "3_gptq_w8")
    assert report_main([str(root), "--no-plots"]) == 0
    rows = list(csv.DictReader(open(root / "summary.csv")))
    assert [r["run"] for r in rows] == ["2_fp8", "3_gptq_w8", "1_gptq", "0_rtn"]
    by = {r["run"]: r for r in rows}
    # rtn: the capability table (no calibration); fp8: its scheme read no rows
    assert [by[n]["family"] for n in ("0_rtn", "1_gptq", "2_fp8")] == \
        ["data-free", "calibrated", "data-free"]
    # sizes are bits MiB: w4 rows are smaller, fp8 (w8, best) and gptq w4 (better than rtn)
    assert [by[n]["pareto"] for n in ("0_rtn", "1_gptq", "2_fp8", "3_gptq_w8")] == \
        ["no", "yes", "yes", "no"]
    assert by["0_rtn"]["measured_on"].startswith("this machine (")
    assert by["3_gptq_w8"]["measured_on"] == "NVIDIA H100 80GB HBM3"
    md = (root / "summary.md").read_text()
    assert "| family |" in md and "| pareto | measured_on |" in md


def test_report_says_which_decode_was_timed_without_its_graph(tmp_path):
    """A quantized model whose CUDA graph the speed step refused (ExLlamaV2's kernels run
    outside the capture) is timed eagerly; the report says so beside the fp model's graph."""
    from qrecipe.report.run import write_run_report
    m = _metrics(q_speed=39.5)
    m["eval"]["quantized"]["speed"].update(
        decode_path="eager", graph_error="GraphMismatch: the replayed step's logits differ")
    write_run_report(tmp_path, m, {})
    md = (tmp_path / "report.md").read_text()
    assert "The quantized model's decode was timed eagerly, one step at a time (no CUDA " \
           "graph: GraphMismatch: the replayed step's logits differ)" in md
    assert "The fp model's decode" not in md
    write_run_report(tmp_path, _metrics(), {})
    assert "timed eagerly" not in (tmp_path / "report.md").read_text()
