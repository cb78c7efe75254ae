"""`hardware.kernel=auto` on a GPU ranks the kernels that fit a checkpoint by measured decode
speed (qrecipe/kernels/measured.py, kernels/measured.json from benchmarks/kernel_speed.py)."""
import pytest

from qrecipe.kernels import measured
from qrecipe.kernels import table as kernels


def _row(kernel, b1, b8, fmt="gptq", sym=True, cc=9.0, gpu="H100", dtype="float16"):
    return {"gpu": gpu, "cc": cc, "dtype": dtype, "format": fmt, "sym": sym, "kernel": kernel,
            "b1_vs_fp16": b1, "b8_vs_fp16": b8}


@pytest.fixture
def table(monkeypatch):
    rows = []
    monkeypatch.setattr(measured, "table", lambda: {"sources": [], "rows": rows})
    return rows


def resolve(fmt="gptq", sym=True, cc=9.0, jit=True, dtype=None):
    return kernels.resolve(fmt, "cuda", "auto", jit, cc=cc, sym=sym, bits=4,
                           group_size=128, dtype=dtype).name


def test_without_measurements_auto_keeps_the_tables_order(table):
    assert resolve(sym=True) == "marlin" and resolve(sym=False) == "exllama_v2"
    assert resolve(sym=False, jit=False) == "torch"


def test_the_fastest_measured_kernel_wins(table):
    # the 32-layer H100 figures in bfloat16: Marlin 1.48x, ExLlamaV2 2.04x on symmetric GPTQ
    table += [_row("marlin", 1.48, 3.1), _row("exllama_v2", 2.04, 2.9), _row("torch", 0.5, 0.6)]
    assert resolve(sym=True) == "exllama_v2"
    assert resolve(sym=True, jit=False) == "torch"  # compiled kernels stay out without allow_jit
    assert [a["kernel"] for a in measured.alternatives("gptq", True, 9.0)] == [
        "exllama_v2", "marlin", "torch"]


def test_a_measured_kernel_that_does_not_fit_is_skipped(table):
    table += [_row("marlin", 3.0, 3.0, sym=None), _row("exllama_v2", 2.0, 2.0, sym=None)]
    assert resolve(sym=False) == "exllama_v2"  # Marlin takes no zero points


def test_rows_of_the_other_symmetry_or_format_do_not_count(table):
    table += [_row("exllama_v2", 2.0, 2.0, sym=False), _row("marlin", 1.0, 1.0, fmt="awq")]
    assert resolve(sym=True) == "marlin"


def test_the_nearest_measured_gpu_counts(table):
    table += [_row("exllama_v2", 2.0, 2.0, cc=8.0, gpu="A100"),
              _row("marlin", 1.5, 1.5, cc=8.0, gpu="A100"),
              _row("marlin", 2.5, 2.5, cc=9.0), _row("exllama_v2", 1.0, 1.0, cc=9.0)]
    assert resolve(cc=9.0) == "marlin"
    assert resolve(cc=8.6) == "exllama_v2"  # the A100's figures are nearer


def test_two_gpus_of_one_cc_never_mix(table):
    # an H100 and an H200 are both 9.0: torch's 1.0x on the H200 must not outrank the H100's
    # Marlin because the H100 also has a slower torch row
    table += [_row("marlin", 1.5, 1.5), _row("torch", 0.4, 0.4), _row("exllama_v2", 0.3, 0.3),
              _row("torch", 1.9, 1.9, gpu="H200")]
    assert resolve(cc=9.0) == "marlin"
    assert {a["gpu"] for a in measured.alternatives("gptq", True, 9.0)} == {"H100"}


def test_the_jobs_dtype_counts_and_float16_stands_in_for_an_unmeasured_one(table):
    table += [_row("marlin", 1.5, 1.4), _row("exllama_v2", 3.0, 2.5),
              _row("marlin", 2.2, 1.4, dtype="bfloat16"),
              _row("exllama_v2", 2.0, 2.5, dtype="bfloat16")]
    assert resolve(dtype="bfloat16") == "marlin"
    assert resolve(dtype="float16") == "exllama_v2" == resolve()  # none given: float16's
    alts = measured.alternatives("gptq", True, 9.0, "float32")  # not measured: float16's
    assert [(a["kernel"], a["dtype"]) for a in alts] == [("exllama_v2", "float16"),
                                                         ("marlin", "float16")]


def test_the_only_measured_dtype_stands_in_when_float16_is_missing(table):
    table += [_row("marlin", 2.2, 1.4, dtype="bfloat16"),
              _row("exllama_v2", 2.0, 2.5, dtype="bfloat16")]
    assert resolve(dtype="float16") == "marlin"


def test_shipped_table_names_real_kernels():
    t = measured.table()
    assert {(s["device"], s["dtype"]) for s in t["sources"]} == {
        (r["gpu"], r["dtype"]) for r in t["rows"]}  # every row's measurement says how it was made
    for r in t["rows"]:
        assert r["format"] in kernels.KERNELS
        assert r["kernel"] in {k.name for k in kernels.KERNELS[r["format"]]}, r
        assert r["b1_vs_fp16"] > 0 and isinstance(r["cc"], float)


def test_the_report_names_the_measured_alternatives():
    from qrecipe.report.run import _measured
    rows = [{"kernel": "exllama_v2", "gpu": "H100", "b1_vs_fp16": 2.04, "b8_vs_fp16": 2.9},
            {"kernel": "marlin", "gpu": "H100", "b1_vs_fp16": 1.48, "b8_vs_fp16": 3.1}]
    assert _measured({"kernel": {"measured": rows}}) == [
        "Measured decode against the fp model at batch 1 / 8 on H100 in float16 "
        "(qrecipe/kernels/measured.json): "
        "exllama_v2 2.04x / 2.90x, marlin 1.48x / 3.10x."]
    assert _measured({"kernel": {"resolved": "torch"}}) == []
