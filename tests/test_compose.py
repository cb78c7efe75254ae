"""Every shipped config and recipe composes against the schema; the config path stays light."""
from __future__ import annotations

import pytest
from conftest import ROOT, compose, run_cli
from omegaconf import OmegaConf

GROUPS = ["model", "method", "bits", "calibration", "hardware", "eval"]
RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
REQUIRED_RECIPES = {"awq_llama13b", "gptq_llama7b", "bnb_nf4_llama7b", "bnb_int8_llama7b",
                    "smollm2_gptq_w4", "smollm2_awq_w4", "smollm2_nf4", "smollm2_int8"}


def test_required_recipes_ship():
    assert REQUIRED_RECIPES <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes_and_names_itself(recipe):
    cfg = compose([f"+recipe={recipe}"])
    assert cfg.recipe_name == recipe
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("group,option", [
    (g, p.stem) for g in GROUPS for p in sorted((ROOT / "conf" / g).glob("*.yaml"))])
def test_every_group_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "model" and option == "local":
        overrides.append("model.path=/tmp/x")
    cfg = compose(overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_command_line_wins_over_recipe():
    cfg = compose(["+recipe=smollm2_awq_w4", "method=gptq", "bits=w8", "bits.group_size=32"])
    assert (cfg.method.name, cfg.bits.width, cfg.bits.group_size) == ("gptq", 8, 32)
    assert "desc_act" in cfg.method  # the gptq schema replaced the awq one


def test_bits_options_keep_recipe_group_size():
    for w in (2, 3, 4, 8):
        cfg = compose(["+recipe=smollm2_gptq_w4", f"bits=w{w}"])
        assert (cfg.bits.width, cfg.bits.group_size) == (w, 64)


def test_cfg_job_prints_config_without_importing_torch():
    code = ("import sys, atexit\n"
            "atexit.register(lambda: print('TORCH_LOADED' if 'torch' in sys.modules "
            "else 'TORCH_ABSENT'))\n"
            "sys.argv=['qrecipe','--cfg','job','+recipe=awq_llama13b']\n"
            "from qrecipe.cli import main\nmain()\n")
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "name: awq" in p.stdout and "meta-llama/Llama-2-13b-hf" in p.stdout
    assert "TORCH_ABSENT" in p.stdout


def test_help_works():
    p = run_cli(["--help"])
    assert p.returncode == 0 and "recipe" in p.stdout


def test_multirun_dry_run_composes_four_jobs_and_rejects_awq_w2():
    p = run_cli(["-m", "+recipe=smollm2_gptq_w4", "bits=w2,w3,w4,w8", "dry_run=true"])
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("dry run: valid") == 4
    # gptqmodel's AWQ writes 4 bits only (AWQ's default backend, llm-compressor, all four)
    p = run_cli(["-m", "+recipe=smollm2_awq_w4", "method.backend=gptqmodel",
                 "bits=w2,w3,w4,w8", "dry_run=true"])
    assert p.stderr.count("dry run: valid") == 1
    assert p.stderr.count("bits.width=") == 3 and "allowed: 4" in p.stderr
    assert p.returncode == 2


def test_wheel_carries_configs_and_recipes(tmp_path):
    """Installed as a wheel (no checkout around it), recipes still compose."""
    import subprocess
    import sys
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("qrecipe-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-m", "qrecipe", "--cfg", "job", "+recipe=smollm2_nf4"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "quant_type: nf4" in p.stdout
    assert str(site) in subprocess.run(
        [sys.executable, "-c", "import qrecipe.paths as p; print(p.config_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True).stdout


@pytest.mark.parametrize("recipe", ["gptq_llama7b", "smollm2_gptq_w4"])
def test_method_by_bits_matrix_composes(recipe):
    """The documented 4 methods x 4 bit widths sweep composes for every cell."""
    for method in ("gptq", "awq", "rtn", "bnb"):
        for w in (2, 3, 4, 8):
            cfg = compose([f"+recipe={recipe}", f"method={method}", f"bits=w{w}"])
            assert cfg.method.name == method and cfg.bits.width == w


def test_sweep_job_dirname_is_one_safe_component():
    from qrecipe.cli import _dirname
    assert _dirname("bits=w4,model.path=/models/x") == "bits=w4,model.path=_models_x"
    long = _dirname("k=" + "v" * 300)
    assert len(long) <= 120 and "/" not in long
    assert _dirname("k=" + "v" * 300) != _dirname("k=" + "v" * 299)
