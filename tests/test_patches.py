"""Third-party patches behind one guard (qrecipe/backends/patching.py and each library's
patches.py): every patched upstream function still has the source its patch was written for;
every context manager restores the originals, also when the block raises; an edited function is
detected; a library outside its supported series gives exactly one line (a warning and the
library's own code, or a refusal where the result depends on a patch)."""
from __future__ import annotations

import importlib
import logging
import sys
from contextlib import ExitStack

import pytest

from qrecipe.backends import hf_patches, patching
from qrecipe.backends.gptqmodel import patches as gptqmodel_patches
from qrecipe.backends.llmcompressor import patches as llmcompressor_patches
from qrecipe.errors import QRecipeError

pytest.importorskip("gptqmodel")
pytest.importorskip("llmcompressor")

SETS = gptqmodel_patches.ALL + llmcompressor_patches.ALL + hf_patches.ALL
PATCHES = [(s, p) for s in SETS for p in s.patches]


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("qrecipe") and r.levelno >= logging.WARNING]


def _current(pset):
    return {p.key: vars(patching.resolve(p.owner))[p.name] for p in pset.patches}


@pytest.fixture
def fresh(monkeypatch, caplog):
    """No version line said yet in this 'run'; warnings of the qrecipe loggers captured."""
    monkeypatch.setattr(patching, "_said", set())
    caplog.set_level(logging.INFO)
    return caplog


@pytest.mark.parametrize("pset,patch", PATCHES, ids=[f"{s.library.dist}:{p.key}"
                                                     for s, p in PATCHES])
def test_installed_function_is_the_one_the_patch_was_written_for(pset, patch):
    """Fails when an upgrade changes a patched function: read the new source, check the patch
    still holds, then record the new fingerprint in the library's patches.py."""
    assert pset.library.holds(patching.installed_version(pset.library.dist))
    assert patching.changed(patch) is None


def test_declarations_are_consistent():
    keys = [p.key for s in SETS for p in s.patches]
    assert len(keys) == len(set(keys))  # one declaration per patched attribute
    assert all(len(p.sha256) == 16 for _, p in PATCHES)
    required = {s.title for s in SETS if s.required}
    assert required == {llmcompressor_patches.CPU_PINNING.title,
                        llmcompressor_patches.FP32_AWQ_LOSS.title}


@pytest.mark.parametrize("pset", SETS, ids=lambda s: s.title)
def test_guarded_restores_every_original_after_an_error(pset, fresh):
    before = _current(pset)
    with pytest.raises(RuntimeError):
        with patching.guarded(pset, lambda orig: {k: f"qrecipe {k}" for k in orig}) as applied:
            assert applied
            assert _current(pset) == {k: f"qrecipe {k}" for k in before}
            raise RuntimeError("quantize() failed")
    assert _current(pset) == before
    assert _warnings(fresh) == []


def _real_context_managers():
    """Each adapter's own context manager, on (CPU), with the set it applies."""
    from qrecipe.backends.gptqmodel import ckptstore, collect, fastloop, hessian, rope, shards
    from qrecipe.backends.llmcompressor import adapter as llmc
    g, lc = gptqmodel_patches, llmcompressor_patches
    return [(lambda: fastloop.fast_layer_loop(True), g.FAST_LAYER_LOOP),
            (rope.per_layer_rope, g.PER_LAYER_ROPE),
            (lambda: hessian.tensor_core_hessian(True), g.TENSOR_CORE_HESSIAN),
            (collect.collect_after_checkpoints, g.CHECKPOINT_GC),
            (lambda: ckptstore.verify_once(True), g.CHECKPOINT_VERIFY),
            (lambda: shards.shard_writes(True), g.SHARD_WRITES),
            (lambda: llmc._cpu_safe_pinning(True), lc.CPU_PINNING),
            (lambda: llmc._fp32_awq_loss(True), lc.FP32_AWQ_LOSS),
            (hf_patches.hashed_shards, hf_patches.SHARD_WRITES)]


@pytest.mark.parametrize("index", range(9))
def test_each_context_manager_restores_on_error(index, fresh):
    torch = pytest.importorskip("torch")
    if torch.accelerator.is_available():
        pytest.skip("the CPU-pinning patch applies without an accelerator only")
    enter, pset = _real_context_managers()[index]
    before = _current(pset)
    with pytest.raises(RuntimeError):
        with enter():
            assert all(_current(pset)[k] is not v for k, v in before.items())
            raise RuntimeError("quantize() failed")
    assert _current(pset) == before
    assert _warnings(fresh) == []


@pytest.mark.parametrize("backend", ["gptqmodel", "llmcompressor"])
def test_layer_hooks_are_restored_with_the_stage(backend, fresh):
    from qrecipe.backends.gptqmodel import layerhooks as g
    from qrecipe.backends.llmcompressor import layerhooks as lc
    from qrecipe.telemetry.layerlog import LayerLog
    hooks, pset = {"gptqmodel": (g, gptqmodel_patches.LAYER_EVENTS),
                   "llmcompressor": (lc, llmcompressor_patches.LAYER_EVENTS)}[backend]
    before = _current(pset)
    with pytest.raises(RuntimeError), ExitStack() as stack:
        hooks.install(stack, LayerLog(2))
        assert all(_current(pset)[k] is not v for k, v in before.items())
        raise RuntimeError("quantize() failed")
    assert _current(pset) == before


def test_the_adapters_register_their_layer_hooks():
    import qrecipe.backends  # noqa: F401  (the adapters register on import)
    from qrecipe.telemetry import layerlog
    assert {"gptqmodel", "llmcompressor"} <= set(layerlog._PROBES)


def _edited_copy(tmp_path, monkeypatch, edit):
    """gptqmodel's GPTQ.compute_hessian_xtx, its source copied into a module of its own (so
    inspect.getsource reads it from a file, as from the installed library), with `edit`."""
    import inspect

    from gptqmodel.quantization.gptq import GPTQ
    src = inspect.getsource(vars(GPTQ)["compute_hessian_xtx"])
    name = f"edited_gptq_{abs(hash(edit)) % 10**8}"
    (tmp_path / f"{name}.py").write_text("import torch\n\n\nclass GPTQ:\n" + edit(src))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, name, raising=False)
    return patching.PatchSet(gptqmodel_patches.GPTQMODEL, "an edited copy", "nothing",
                             (patching.Patch(f"{name}:GPTQ", "compute_hessian_xtx",
                                             gptqmodel_patches.TENSOR_CORE_HESSIAN
                                             .patches[0].sha256),))


def test_an_edited_upstream_function_is_detected(tmp_path, monkeypatch, fresh):
    same = _edited_copy(tmp_path, monkeypatch, lambda s: s)
    assert patching.changed(same.patches[0]) is None  # the copy as installed: recognized
    edited = _edited_copy(tmp_path, monkeypatch, lambda s: s.replace(
        "rows = matrix.shape[0]", "rows = int(matrix.shape[0])", 1))  # an upstream change
    why = patching.changed(edited.patches[0])
    assert why is not None and why.startswith("GPTQ.compute_hessian_xtx changed (source sha256")
    owner = patching.resolve(edited.patches[0].owner)
    original = vars(owner)["compute_hessian_xtx"]
    with patching.guarded(edited, lambda orig: {"GPTQ.compute_hessian_xtx": None}) as applied:
        assert not applied and vars(owner)["compute_hessian_xtx"] is original
    lines = _warnings(fresh)
    assert len(lines) == 1 and "GPTQ.compute_hessian_xtx changed" in lines[0]
    assert "running without an edited copy (nothing); gptqmodel's own code runs" in lines[0]
    required = patching.PatchSet(edited.library, "a required copy", "the result",
                                 edited.patches, required=True)
    with pytest.raises(QRecipeError, match="changed .* is needed for a correct result"):
        with patching.guarded(required, lambda orig: {"GPTQ.compute_hessian_xtx": None}):
            pass
    assert vars(owner)["compute_hessian_xtx"] is original


def test_a_missing_attribute_is_said_not_skipped_silently(fresh):
    pset = patching.PatchSet(gptqmodel_patches.GPTQMODEL, "a removed hook", "its lines",
                             (patching.Patch("gptqmodel.models.base:BaseQModel",
                                             "no_such_method", "0" * 16),))
    with patching.guarded(pset, lambda orig: {"BaseQModel.no_such_method": 1}) as applied:
        assert not applied
    assert _warnings(fresh) == ["BaseQModel.no_such_method is gone: running without a removed "
                                "hook (its lines); gptqmodel's own code runs"]


def _fake_version(monkeypatch, dist, version):
    real = patching.installed_version
    monkeypatch.setattr(patching, "installed_version",
                        lambda d: version if d == dist else real(d))


def test_another_gptqmodel_is_one_line_and_runs_without_the_patches(monkeypatch, fresh):
    from qrecipe.backends.gptqmodel import ckptstore, collect, fastloop, hessian, rope, shards
    from qrecipe.backends.gptqmodel.adapter import GPTQModelBackend
    _fake_version(monkeypatch, "gptqmodel", "7.7.0")
    GPTQModelBackend().check_versions("gptq")  # run start (run/validate.py)
    before = {s.title: _current(s) for s in gptqmodel_patches.ALL}
    with fastloop.fast_layer_loop(True) as fast, hessian.tensor_core_hessian(True) as tc, \
            collect.collect_after_checkpoints(), shards.shard_writes(True), \
            rope.per_layer_rope(), ckptstore.verify_once(True) as checked:
        assert not fast and not tc and checked.stats == {}
        assert {s.title: _current(s) for s in gptqmodel_patches.ALL} == before
    lines = _warnings(fresh)
    assert len(lines) == 1, lines
    assert lines[0].startswith("gptqmodel 7.7.0 is installed, qrecipe supports 7.6.x: running "
                               "without the fast GPTQ layer loop")
    assert lines[0].endswith("gptqmodel's own code runs")


def test_version_line_at_patch_time_when_no_run_start_check(monkeypatch, fresh):
    """An adapter called without validate() (a script): the guard says it, once."""
    from qrecipe.backends.gptqmodel import collect
    _fake_version(monkeypatch, "gptqmodel", "8.0.1")
    with collect.collect_after_checkpoints():
        pass
    assert _warnings(fresh) == ["gptqmodel 8.0.1 is installed, qrecipe supports 7.6.x: running "
                                "without a collection after each layer checkpoint (host RAM "
                                "grows by one layer's inputs per checkpointed layer); "
                                "gptqmodel's own code runs"]


def test_another_llmcompressor_refuses_awq_and_warns_for_gptq(monkeypatch, fresh):
    from qrecipe.backends.llmcompressor.adapter import LLMCompressorBackend
    _fake_version(monkeypatch, "llmcompressor", "0.15.0")
    with pytest.raises(QRecipeError) as e:
        LLMCompressorBackend().check_versions("awq")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("method.backend='llmcompressor': llmcompressor "
                                              "0.15.0 is installed, qrecipe supports 0.14.x")
    assert "so the run is refused" in msg and "pip install -c constraints.txt" in msg
    LLMCompressorBackend().check_versions("gptq")
    lines = _warnings(fresh)
    assert len(lines) == 1 and "running without per-layer progress" in lines[0]


def test_a_library_without_patches_is_one_line_too(monkeypatch, fresh):
    from qrecipe.backends.bitsandbytes import BitsAndBytesBackend
    _fake_version(monkeypatch, "transformers", "5.18.0")
    BitsAndBytesBackend().check_versions("bnb")
    assert _warnings(fresh) == ["transformers 5.18.0 is installed, qrecipe supports 5.17.x: an "
                                "untested combination; the run goes on"]


def test_validate_checks_versions_before_any_weight(monkeypatch, fresh):
    from conftest import compose

    from qrecipe.run.validate import validate
    _fake_version(monkeypatch, "gptqmodel", "7.7.0")
    plan = validate(compose(["+recipe=smollm2_gptq_w4", "hardware=cpu"]))
    assert plan.backend.name == "gptqmodel"
    lines = [ln for ln in _warnings(fresh) if "is installed" in ln]
    assert len(lines) == 1 and lines[0].startswith("gptqmodel 7.7.0 is installed")


def test_series():
    s = patching.Supported("gptqmodel", "7.6")
    assert s.holds("7.6") and s.holds("7.6.0") and s.holds("7.6.12")
    assert not s.holds("7.60.0") and not s.holds("7.7.0") and not s.holds("17.6.0")


def test_per_layer_type_rope_is_kept_and_other_configs_go_to_gptqmodel(fresh):
    """Gemma 3's RoPE dict per attention type passes through untouched (gptqmodel's own
    normalization raised on it); a flat Llama config is still normalized by gptqmodel."""
    pytest.importorskip("gptqmodel")
    from transformers import Gemma3TextConfig, LlamaConfig

    from gptqmodel.utils import hf
    from qrecipe.backends.gptqmodel import rope

    gemma = Gemma3TextConfig(num_hidden_layers=2, sliding_window_pattern=2)
    assert rope.per_layer_type(gemma) and not rope.per_layer_type(LlamaConfig())
    before = dict(gemma.rope_parameters)
    with rope.per_layer_rope() as applied:
        assert applied
        hf._normalize_rope_parameters_config_compat(gemma)
        llama = LlamaConfig()
        llama.rope_parameters = None
        hf._normalize_rope_parameters_config_compat(llama)
    assert gemma.rope_parameters == before
    assert llama.rope_parameters and llama.rope_parameters.get("rope_type") == "default"
