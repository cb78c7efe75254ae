"""Property: any override of any config field is either accepted or rejected cleanly.

Hypothesis draws a handful of overrides over every field of every config group (read from the
schema dataclasses, so a new field is covered without touching this file), with values that are
plausible, boundary, wrong-typed or random. Each drawn command line is composed by Hydra and
validated by the runner as a dry run (no weights loaded). The outcome must be what the CLI turns
into exit 0 or exit 2: composition errors of Hydra/OmegaConf's own types (one line, exit 2),
"ok", or "user_error" with exactly one `error:` line and no traceback. Anything else (a crash,
exit 1) is a bug. QRECIPE_HYPOTHESIS_EXAMPLES sets the number of examples (default 200).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrecipe.recipes import schema

EXAMPLES = int(os.environ.get("QRECIPE_HYPOTHESIS_EXAMPLES", "200"))
GROUPS = {"model": schema.ModelConfig, "bits": schema.BitsConfig,
          "calibration": schema.CalibrationConfig, "hardware": schema.HardwareConfig,
          "eval": schema.EvalConfig, "cache": schema.CacheConfig}
TOP = [f for f in dataclasses.fields(schema.Config) if f.name not in GROUPS and f.name != "method"]
METHOD_FIELDS = sorted({f.name for m in schema.METHOD_SCHEMAS.values()
                        for f in dataclasses.fields(m)})
OPTIONS = {"method": ["gptq", "awq", "rtn", "bnb"], "bits": ["w2", "w3", "w4", "w8"],
           "calibration": ["pydoc", "local"], "eval": ["none", "wikitext2_local"]}
# Strings a user might type: names the schema knows, paths, and junk.
WORDS = ["gptq", "awq", "rtn", "bnb", "gptqmodel", "llmcompressor", "bitsandbytes", "cpu", "cuda",
         "auto", "float16", "bfloat16", "float32", "nf4", "fp4", "hub", "local", "gguf", "pydoc",
         "text", "train", "test", "/nope", "pkg://qrecipe/texts/jargon_file_4.4.7.txt",
         "pkg://nopkg/x", "x", "../..", "a b", "null", "true", "0", "-1", "1e9", "'quoted'"]
SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-./", min_size=1, max_size=12)


def _value(tp) -> st.SearchStrategy:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        inner = [a for a in args if a is not type(None)][0]
        return st.one_of(st.just("null"), _value(inner))
    if tp is bool:
        return st.one_of(st.sampled_from(["true", "false"]), st.sampled_from(WORDS))
    if tp is int:
        return st.one_of(st.integers(-3, 600).map(str), st.sampled_from(["0", "-1", "1", "2", "3",
                         "4", "8", "32", "64", "128", "999999999999"]), st.sampled_from(WORDS))
    if tp is float:
        return st.one_of(st.floats(-1, 10, allow_nan=False).map(lambda x: f"{x:.3f}"),
                         st.sampled_from(WORDS))
    if origin in (dict, typing.Dict):
        return st.sampled_from(["{}", "{cpu: 1GiB}", "{'0': 22GiB}", "x", "null"])
    if origin in (list, typing.List):
        return st.sampled_from(["[]", "[a,b]", "x"])
    return st.one_of(st.sampled_from(WORDS), SAFE)


def _field_types(cls):
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


FIELDS = [(f"{g}.{n}", t) for g, cls in GROUPS.items() for n, t in _field_types(cls).items()]
FIELDS += [(f"method.{n}", str) for n in METHOD_FIELDS]
FIELDS += [(f.name, typing.get_type_hints(schema.Config)[f.name]) for f in TOP
           if f.name != "dry_run"]


@st.composite
def overrides(draw):
    out = []
    for group, opts in OPTIONS.items():
        if draw(st.booleans()):
            out.append(f"{group}={draw(st.sampled_from(opts))}")
    for key, tp in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4,
                                 unique_by=lambda kv: kv[0])):
        if key == "recipe_name" or key.endswith(".path") or key == "cache.dir":
            val = draw(st.one_of(_value(tp), SAFE))
        else:
            val = draw(_value(tp))
        out.append(f"{key}={val}")
    return out


@pytest.fixture(scope="module")
def composer(tiny_model_dir):
    import logging

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from qrecipe.paths import config_dir
    schema.register()
    GlobalHydra.instance().clear()
    handlers = logging.root.handlers[:]
    logging.root.handlers = []  # no handler left over from another test's captured stream
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        yield lambda ov: compose(config_name="config", overrides=[
            "model=local", f"model.path={tiny_model_dir}", "bits.group_size=32", *ov,
            "dry_run=true"])
    GlobalHydra.instance().clear()
    logging.root.handlers = handlers


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ov=overrides())
def test_any_override_validates_or_fails_cleanly(ov, composer, tmp_path_factory, monkeypatch):
    from huggingface_hub import constants

    from qrecipe.recipes.hydra_errors import is_config_error, one_line
    from qrecipe.run.runner import run_job

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a drawn hub id never goes online
    try:
        cfg = composer(ov)
    except Exception as e:  # composition: the CLI prints one line and exits 2
        assert is_config_error(e), (ov, repr(e))
        assert "\n" not in one_line(e).strip(), ov
        return
    out = Path(tmp_path_factory.mktemp("p")) / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = run_job(cfg, out, keep_failed_dir=False)
    text = err.getvalue()
    assert status in ("ok", "user_error"), (ov, status, text[-2000:])
    assert "Traceback" not in text, ov
    if status == "user_error":
        assert len([ln for ln in text.splitlines() if ln.startswith("error:")]) == 1, (ov, text)
    else:
        assert "dry run: valid" in text, (ov, text)
    assert not out.exists()  # validation only: nothing is left behind


def test_every_field_is_drawn():
    keys = {k for k, _ in FIELDS}
    assert {"model.allow_pickle", "calibration.overlap", "force", "method.damp_percent",
            "hardware.max_memory", "eval.max_windows", "bits.width"} <= keys
    assert len(keys) >= 50
