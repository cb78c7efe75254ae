"""A terminal that tells the story (qrecipe/telemetry/terminal.py, capture.py): qrecipe's own lines
and one progress bar per stage on a terminal, the libraries' output in library.log with their
warnings counted once, no progress frames where the output is not a terminal, and a final block
with the verdict and the path to report.md."""
from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import warnings

import pytest
from conftest import ROOT

from qrecipe.record.outputs import LIBRARY_LOG
from qrecipe.telemetry import capture, terminal


class _Tty(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_bar_frames_only_on_a_terminal(tty):
    stream = _Tty(tty)
    with terminal.using(terminal.Terminal(stream)):
        with terminal.progress("quantize", 4, "layers") as bar:
            for i in range(1, 5):
                bar.update(i)
                terminal.current().line(f"layer {i - 1} done")
    text = stream.getvalue()
    assert [ln.rsplit("\r\x1b[K", 1)[-1] for ln in text.split("\n") if "done" in ln] == \
        [f"layer {i} done" for i in range(4)]
    if tty:
        assert "quantize [" in text and "4/4 layers" in text and "ETA" in text
    else:
        assert "\r" not in text and "quantize [" not in text  # no frames at all


def test_bar_eta():
    bar = terminal.Bar(terminal.Terminal(_Tty(False)), "perplexity (fp)", 8, "windows")
    bar.t0 -= 10.0  # 10 s for 2 of 8 windows: 30 s to go
    bar.done = 2
    assert re.search(r"2/8 windows, 0:10, ETA 0:30$", bar.render())


def test_library_output_goes_to_library_log(tmp_path, capfd):
    """print(), C-level writes, another library's records, warnings.warn, tqdm frames: into
    library.log; qrecipe's own records and the warning summary: on the terminal."""
    out = tmp_path / "run"
    out.mkdir()
    own = logging.getLogger("qrecipe.test_terminal")
    console = terminal.ConsoleHandler(sys.stderr)
    console.addFilter(terminal.OwnLines())
    root = logging.getLogger()
    root.addHandler(console)
    old_level, root.level = root.level, logging.INFO
    try:
        with capture.Capture(out, LIBRARY_LOG):
            print("a library's banner")
            os.write(1, b"C-level line\n")
            os.write(2, b"WARN  Calibration dataset size should be more than 256. Current: 32.\n")
            sys.stderr.write("Loading: 50%|#####     | 1/2 [00:00<00:00]\rLoading: 100%|###"
                             "#######| 2/2 [00:00<00:00]\n")
            logging.getLogger("somelib").warning("somelib is unhappy with %s", "/a/b/c.so")
            logging.getLogger("somelib").info("somelib says hello")
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.warn("old API", FutureWarning)
                warnings.warn("old API", FutureWarning)
            own.info("qrecipe's own line")
    finally:
        root.removeHandler(console)
        root.level = old_level
    term = capfd.readouterr()
    lib = (out / LIBRARY_LOG).read_text()
    for text in ("a library's banner", "C-level line", "Calibration dataset size",
                 "somelib is unhappy", "somelib says hello", "FutureWarning: old API"):
        assert text in lib and text not in term.out + term.err.split("library warnings")[0]
    assert "%|" not in lib and "\r" not in lib  # frames never reach the file
    assert "qrecipe's own line" in term.err and "qrecipe's own line" not in lib
    summary = term.err[term.err.index("library warnings"):]
    assert "4 library warnings, 3 distinct (see library.log):" in term.err
    assert "somelib is unhappy with c.so" in summary  # a path named by its last part
    assert "FutureWarning: old API (x2)" in summary
    assert summary.count("Calibration dataset size") == 1


def test_warning_lines_counted_once_per_warning():
    w = capture.Warnings(LIBRARY_LOG)
    glog = "W1206 14:04:30.050000 8983 site-packages/torch/_dynamo/convert_frame.py:1994] "
    for line in (glog + "[2/128] torch._dynamo hit config.recompile_limit (128)",
                 glog + "[2/128]    function: '_stream_decode_qzeros'",
                 "INFO  Calibration: Native order",
                 glog.replace("14:04:30", "14:04:31") + "[3/128] torch._dynamo hit config."
                 "recompile_limit (128)"):
        w.scan(line)
    assert w.count == 2 and len(w.texts) == 1
    assert w.summary()[1] == "  torch._dynamo hit config.recompile_limit (128) (x2)"


def _user_env():
    """A user's shell: pytest's and CI's markers removed (LogBar hides bars when it sees them)."""
    from logbar.terminal import _HEADLESS_ENV_PREFIXES, _HEADLESS_ENV_VARS

    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"
            and k not in _HEADLESS_ENV_VARS and not k.startswith(_HEADLESS_ENV_PREFIXES)}


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_a_run_tells_its_story(method, tiny_model_dir, tmp_path):
    out = tmp_path / method
    r = subprocess.run(
        [sys.executable, "-m", "qrecipe", "model=local", f"model.path={tiny_model_dir}",
         f"method={method}", "bits.group_size=32", "calibration.num_samples=4",
         "calibration.seq_len=32", "eval.seq_len=64", "eval.stride=64", "eval.max_windows=2",
         f"hydra.run.dir={out}"], cwd=ROOT, env=_user_env(), capture_output=True, timeout=600)
    text = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, text[-3000:]
    assert "\r" not in text  # not a terminal: no frames, neither qrecipe's nor a library's
    lines = text.splitlines()
    # every line is qrecipe's (its timestamp) or a warning summary's (indented below it)
    assert all(re.match(r"\[\d\d:\d\d:\d\d\] ", ln) for ln in lines), lines
    lib = (out / "library.log").read_text()
    assert "GPT-QModel" in lib and "GPT-QModel" not in text
    assert "INFO  " not in text and "INFO  " in lib
    assert re.search(r"\] \d+ library warnings?(, \d+ distinct)? \(see library\.log\):", text)
    tail = [ln.split("] ", 1)[1] for ln in lines[-5:]]
    assert tail[0] == "result: no expectations"
    assert re.fullmatch(r"  perplexity \d+\.\d{4}, fp \d+\.\d{4}, Δppl [+-]\d+\.\d{4}", tail[1])
    assert tail[2].startswith("  size on disk ") and "decode" in tail[2]
    assert re.fullmatch(r"  total time \d+m \d\ds", tail[3])
    assert tail[4] == f"  report: {out / 'report.md'}" and (out / "report.md").is_file()
    run_log = (out / "run.log").read_text()
    assert "GPT-QModel" not in run_log and "[qrecipe" in run_log
    from qrecipe.record.outputs import verify_manifest
    assert verify_manifest(out) == []  # library.log is tidied after the manifest: listed only
