"""tuned=cpu: each method's measured settings live once (conf/tuned_method/cpu/METHOD.yaml), the
per-method recipes and the comparison recipes read them, the command line still wins, and a
bits=... group choice that they would silently replace is refused."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import compose, run_cli
from qrecipe.paths import config_dir

# method -> the shipped single-method recipe on SmolLM2 that promises its figures
RECIPES = {"gptq": "smollm2_gptq_w4", "awq": "smollm2_awq_w4", "rtn": "smollm2_rtn_w4",
           "bnb": "smollm2_nf4", "hqq": "smollm2_hqq_w4", "fp8": "smollm2_fp8",
           "w8a8": "smollm2_w8a8", "autoround": "smollm2_autoround_w4",
           "nvfp4": "smollm2_nvfp4", "mxfp4": "smollm2_mxfp4"}
# what a job makes: the keys whose values are the method's settings (calibration: for the
# methods that read rows; the data-free ones never open it)
MADE = ("model", "method", "bits")
DATA_FREE = {"rtn", "bnb", "hqq", "fp8", "mxfp4", "nvfp4"}  # fp8 dynamic, FP4 weight-only


def _made(cfg):
    keys = MADE + (() if cfg.method.name in DATA_FREE else ("calibration",))
    return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in keys}


def test_every_method_has_measured_settings_and_nothing_else_does():
    files = {p.stem for p in (config_dir() / "tuned_method" / "cpu").glob("*.yaml")}
    methods = {p.stem for p in (config_dir() / "method").glob("*.yaml")}
    assert files == methods == set(RECIPES)


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_compare_sweep_job_makes_what_the_methods_recipe_makes(method):
    """The comparison job of a method and the method's own recipe compose to the same model,
    method, bits and calibration: one place holds them."""
    job = compose(["+recipe=smollm2_compare", f"method={method}"])
    own = compose([f"+recipe={RECIPES[method]}"])
    assert job.tuned == own.tuned == "cpu"
    # the comparison loads every method in bfloat16: one fp baseline for all its rows
    assert job.model.dtype == "bfloat16"
    job.model.dtype = own.model.dtype
    assert _made(job) == _made(own)


def test_the_measured_settings_reach_the_job_and_the_command_line_wins():
    fp8 = compose(["+recipe=smollm2_compare", "method=fp8"])
    assert (fp8.bits.width, fp8.bits.group_size, fp8.model.dtype) == (8, -1, "bfloat16")
    nv = compose(["+recipe=smollm2_compare", "method=nvfp4", "bits.group_size=32"])
    assert (nv.bits.width, nv.bits.group_size) == (4, 32)
    ar = compose(["+recipe=gemma3_compare", "method=autoround", "bits.width=2"])
    assert (ar.bits.width, ar.method.preset, ar.model.path.endswith("q4_k_m.gguf")) == \
        (2, "light", True)


def test_without_tuned_the_method_groups_own_defaults_stand():
    plain = compose(["method=fp8"])
    assert plain.tuned == "none"
    assert (plain.bits.width, plain.bits.group_size) == (4, 64)  # conf/bits/w4_g64.yaml


def test_the_bits_group_gives_the_int_methods_width_and_the_schemes_keep_theirs():
    """bits=w3 under tuned=cpu: the int methods at 3 bits with their measured group size (as
    the recipes always did); FP8 and NVFP4 keep the width of their scheme."""
    for r, m in (("smollm2_gptq_w4", None), ("smollm2_compare", "autoround"),
                 ("gemma3_compare", "rtn")):
        cfg = compose([f"+recipe={r}", "bits=w3", *([f"method={m}"] if m else [])])
        assert (cfg.bits.width, cfg.bits.group_size) == (3, 64), r
    fp8 = compose(["+recipe=smollm2_compare", "method=fp8", "bits=w3"])
    nv = compose(["+recipe=smollm2_compare", "method=nvfp4", "bits=w8"])
    assert (fp8.bits.width, nv.bits.width, nv.bits.group_size) == (8, 4, 16)


def test_a_sweep_over_methods_and_widths_dry_runs(tmp_path):
    p = run_cli(["-m", "+recipe=smollm2_compare", "method=gptq,autoround", "bits=w2,w3",
                 "dry_run=true", f"hydra.sweep.dir={tmp_path}"])
    assert p.returncode == 0, p.stderr[-2000:]
    summary = (tmp_path / "summary.md").read_text()
    for m in ("gptq", "autoround"):
        for w in (2, 3):
            assert f"| {m} | " in summary and f" | {w} | 64 |" in summary
