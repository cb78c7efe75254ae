"""run.log is for people: no progress-bar frames or tables (qrecipe/telemetry/logs.py), one line
per decoder layer (qrecipe/telemetry/layerlog.py, fed by backends/<library>/layerhooks.py); the
backends' own output goes to library.log (tests/test_terminal.py)."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from qrecipe.telemetry import layerlog, logs
from qrecipe.telemetry.monitor import Stages

TQDM = "Loading: 100%|██████████| 20/20 [00:00<00:00, 28445.60it/s]"
LOGBAR = "\r[0 of 9] ░░░░░░░░░░░░ Forward rows 3/8 | 0:00:00 / 0:00:01"
TABLE = ("+--------+-------+\n| region | count |\n+--------+-------+\n| fwd    | 1     |\n"
         "+--------+-------+")


@pytest.mark.parametrize("text", [TQDM, LOGBAR, TABLE, "\x1b[32m" + TQDM + "\x1b[0m",
                                  "┌──────┐\n│ GPT-QModel │\n└──────┘", "  \n \r"])
def test_frames_and_tables_are_dropped(text):
    assert logs.clean(text) == ""


def test_readable_lines_are_kept():
    assert logs.clean("quantize done in 3.2s") == "quantize done in 3.2s"
    assert logs.clean("\x1b[1mINFO\x1b[0m  Kernel: TorchLinear") == "INFO  Kernel: TorchLinear"
    # a redraw keeps its last state; a mixed record keeps its readable lines
    assert logs.clean("step 1\rstep 2") == "step 2"
    assert logs.clean("summary:\n" + TABLE + "\n3 layers") == "summary:\n3 layers"


def test_file_handler_setup(tmp_path):
    path = tmp_path / "run.log"
    handler = logging.FileHandler(path)
    handler.addFilter(logs.FileFilter())
    handler.setFormatter(logs.FileFormatter("%(levelname)s %(message)s"))
    lg = logging.getLogger("qrecipe.test_logs")
    lg.propagate = False
    lg.addHandler(handler)
    try:
        lg.warning("%s", TQDM)
        lg.warning(TABLE)
        lg.warning("layer %d done", 3)
        lg.warning("stats:\n%s", TABLE)
        try:
            raise ValueError("boom | x |")
        except ValueError:
            lg.exception("crashed")
    finally:
        lg.removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert "\r" not in text and "it/s" not in text and "+---" not in text
    assert "WARNING layer 3 done" in text and "WARNING stats:" in text
    assert "ERROR crashed" in text and "ValueError: boom | x |" in text  # traceback untouched


def test_layer_rows_and_format(caplog):
    caplog.set_level(logging.INFO, logger="qrecipe.layers")
    windows = iter([None, 3 << 30, 1 << 30])
    with layerlog.LayerLog(2, gpu_window=lambda: next(windows)) as layers:
        layers.first_layer_starts()
        layers.done(0, "model.layers.0")
        layers.done(0, "model.layers.0")  # a second event for the same layer: no second line
        layers.done(1)
    lines = [r.getMessage() for r in caplog.records if r.name == "qrecipe.layers"]
    assert len(lines) == 2 and len(layers.rows) == 2
    assert re.fullmatch(r"layer 0 \(1/2\) model\.layers\.0: \d+\.\ds, peak RSS \d+\.\d\d GB, "
                        r"peak GPU 3\.00 GB", lines[0])
    assert lines[1].startswith("layer 1 (2/2): ") and lines[1].endswith("peak GPU 1.00 GB")
    assert layers.rows[0]["peak_rss_bytes"] > 0
    assert layerlog.format_row({"layer": "4-5", "seconds": 2.0}, 8) == "layers 4-5 (of 8): 2.0s"


def test_unknown_backend_has_no_probe():
    with layerlog.layer_log("bitsandbytes", 4) as layers:
        pass
    assert layers.rows == []


def test_gpu_window_keeps_stage_peak(monkeypatch):
    class FakeCuda:
        peak = 0

        def max_memory_allocated(self):
            return self.peak

        def reset_peak_memory_stats(self):
            self.peak = 0

    cuda = FakeCuda()
    monkeypatch.setattr("qrecipe.telemetry.monitor._cuda", lambda: cuda)
    stages = Stages()
    with stages.stage("quantize", memory=True):
        cuda.peak = 5
        assert stages.gpu_window() == 5
        cuda.peak = 2
        assert stages.gpu_window() == 2
        cuda.peak = 1
    assert stages.peak_gpu["quantize"] == 5  # the per-layer resets do not hide the stage's peak


@pytest.mark.parametrize("backend", ["gptqmodel", "llmcompressor"])
def test_run_log_one_line_per_layer(backend, tiny_model_dir, tmp_path):
    out = tmp_path / backend
    r = _run_as_a_user(["model=local", f"model.path={tiny_model_dir}", "method=gptq",
                 f"method.backend={backend}", "bits.group_size=32", "calibration.num_samples=4",
                 "calibration.seq_len=32", "eval.enabled=false", f"hydra.run.dir={out}"])
    assert r.returncode == 0, r.stderr[-2000:]
    text = (out / "run.log").read_text()
    layer_lines = [ln for ln in text.splitlines() if "[qrecipe.layers]" in ln]
    assert [re.search(r"\] (layer \d \(\d/2\) model\.layers\.\d):", ln).group(1)
            for ln in layer_lines] == ["layer 0 (1/2) model.layers.0",
                                       "layer 1 (2/2) model.layers.1"]
    assert all(re.search(r": \d+\.\ds, peak RSS \d+\.\d\d GB$", ln) for ln in layer_lines)
    assert "\r" not in text and "it/s" not in text and "%|" not in text and "+---" not in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["layer"] for row in metrics["per_layer"]] == [0, 1]
    # the backends' progress bars reach neither the terminal (not one here: no frames at all)
    # nor a log; their other lines are in library.log (qrecipe/telemetry/capture.py)
    assert "\r" not in r.stdout + r.stderr
    assert "Calibrating" not in r.stderr and "Quantizing layer" not in r.stdout
    lib = (out / "library.log").read_text()
    assert "\r" not in lib and "%|" not in lib
    if backend == "gptqmodel":
        assert "GPT-QModel" in lib


def _run_as_a_user(args):
    """python -m qrecipe in a user's shell: pytest's and CI's markers removed (gptqmodel and
    LogBar hide their bars when they see them)."""
    from logbar.terminal import _HEADLESS_ENV_PREFIXES, _HEADLESS_ENV_VARS

    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"
           and k not in _HEADLESS_ENV_VARS and not k.startswith(_HEADLESS_ENV_PREFIXES)}
    r = subprocess.run([sys.executable, "-m", "qrecipe", *args], cwd=ROOT, env=env,
                       capture_output=True, timeout=600)
    # bytes, decoded by hand: text=True would turn every '\r' into '\n'
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                       r.stderr.decode(errors="replace"))


def test_probe_waits_for_the_adapters_import(tmp_path, monkeypatch):
    (tmp_path / "fakelib_q9").mkdir()
    (tmp_path / "fakelib_q9" / "__init__.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    monkeypatch.setitem(layerlog._PROBES, "fake",
                        ("fakelib_q9", lambda stack, layers: seen.append(
                            __import__("fakelib_q9").VALUE)))
    import sys
    with layerlog.layer_log("fake", 1):
        assert "fakelib_q9" not in sys.modules and seen == []  # not imported by qrecipe
        import importlib.util
        assert importlib.util.find_spec("fakelib_q9") is not None  # an availability check
        assert "fakelib_q9" not in sys.modules and seen == []
        import fakelib_q9  # noqa: F401  (the adapter's import)
        assert seen == [1]
    assert not any(type(f).__name__ == "Finder" for f in sys.meta_path)
    sys.modules.pop("fakelib_q9", None)
