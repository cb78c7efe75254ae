"""`method.backend: auto`: the backend measured faster on the job's device, written into the
config so the lock and the report name the backend that ran. AWQ's default is llm-compressor, the
backend auto picks on every device (conf/method/awq.yaml says why)."""
import pytest
from conftest import compose, run_cli

from qrecipe.errors import QRecipeError
from qrecipe.run.validate import settle_backend, validate

SMOL = ["+recipe=smollm2_awq_w4"]


def test_awq_default_is_the_backend_auto_picks():
    assert compose(SMOL).method.backend == "llmcompressor"
    assert compose(["method=awq"]).method.backend == "llmcompressor"


@pytest.mark.parametrize("hardware,backend", [("cpu", "llmcompressor"),
                                              ("h100_80gb", "llmcompressor"),
                                              ("t4_16gb", "llmcompressor")])
def test_awq_auto_is_the_faster_backend_of_the_device(hardware, backend):
    cfg = compose([*SMOL, f"hardware={hardware}", "method.backend=auto"])
    plan = validate(cfg, here=False)
    assert plan.backend.name == backend and cfg.method.backend == backend


def test_a_method_with_one_backend_takes_it():
    cfg = compose(["+recipe=smollm2_nf4", "method.backend=auto"])
    settle_backend(cfg)
    assert cfg.method.backend == "bitsandbytes"


def test_auto_without_a_measured_choice_is_one_line():
    cfg = compose(["+recipe=smollm2_gptq_w4", "method.backend=auto"])
    with pytest.raises(QRecipeError) as e:
        settle_backend(cfg)
    assert str(e.value) == ("method.backend='auto': auto names no backend for this method on "
                            "this device; allowed: gptqmodel, llmcompressor")


def test_the_lock_records_the_backend_that_ran(tiny_model_dir, tmp_path):
    p = run_cli(["method=bnb", "method.backend=auto", "bits=w4", "model=local",
                 f"model.path={tiny_model_dir}", "eval.max_windows=1", "eval.seq_len=32",
                 "eval.stride=32", "eval.speed=false", f"hydra.run.dir={tmp_path}"])
    assert p.returncode == 0, p.stderr[-3000:]
    lock = (tmp_path / "recipe.lock.yaml").read_text()
    assert "backend: bitsandbytes" in lock and "backend: auto" not in lock
