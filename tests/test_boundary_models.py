"""Issue 23, model folders and files (qrecipe/boundary/modelfolder.py, boundary/jsonfile.py,
inputs/gguf_meta.py): a model folder that names or holds Python code is refused before any
library sees it unless trust_remote_code=true is given on the command line; config files and
GGUF headers from outside are read within limits. Each case runs the real entry point (a run or
dry run through qrecipe.cli.main in this process, `qrecipe validate`, `qrecipe plan` in a
subprocess) on a payload built in tmp_path, and asserts exit 2, one `error:` line naming the key
and the file, no traceback, and that the payload's Python never ran: its module writes
tmp_path/PWNED when imported. test_trusted_code_runs proves the payload is live: with
trust_remote_code=true a real run imports it (gptqmodel's loader does, from auto_map)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
from pathlib import Path

import pytest
from conftest import run_cli
from test_bad_inputs import cli

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
         "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 4, "vocab_size": 100, "torch_dtype": "float32"}
AUTO_MAP = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
RUN = ["bits.group_size=32", "eval.enabled=false", "calibration.num_samples=4",
       "calibration.seq_len=32"]
PROGRESS = re.compile(r"\[\d\d:\d\d:\d\d\] ")  # the runner's stage lines ("== validate")
TRUST_HINT = "pass trust_remote_code=true on the command line if you trust this folder's code"


# --- payloads ---------------------------------------------------------------------------------

def marker(tmp: Path) -> Path:
    return tmp / "PWNED"


def code(tmp: Path) -> str:
    """A module that leaves a mark when imported."""
    return f"open({str(marker(tmp))!r}, 'w').write('imported')\nclass XForCausalLM: pass\n"


def safetensors(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0" * 64)


def folder(tmp: Path, config=None, py: str | None = None, name: str = "model") -> Path:
    """A model folder validation accepts (config.json + a well-formed safetensors file), with
    `config` (a dict, or the raw text of config.json) and a payload module `py` if named."""
    m = tmp / name
    m.mkdir()
    conf = LLAMA if config is None else config
    (m / "config.json").write_text(conf if isinstance(conf, str) else json.dumps(conf))
    safetensors(m / "model.safetensors")
    if py:
        (m / py).parent.mkdir(parents=True, exist_ok=True)
        (m / py).write_text(code(tmp))
    return m


def tree_hash(d: Path) -> str:
    """The folder's names and bytes: a refused folder is left exactly as it was."""
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        h.update(str(p.relative_to(d)).encode())
        if p.is_file() and not p.is_symlink() and p.stat().st_size < 1 << 20:
            h.update(p.read_bytes())
    return h.hexdigest()


def gguf(kv: bytes = b"", n_kv: int = 0, n_tensors: int = 1, version: int = 3,
         cut: int = 0) -> bytes:
    """A little-endian GGUF v3 whose header validation reads as a 2-layer Llama of widths
    64/128, with `kv` (raw key/value entries, `n_kv` of them) after the valid ones."""
    good = (_kv("general.architecture", 8, _s("llama")) + _kv("llama.embedding_length", 4, 64)
            + _kv("llama.feed_forward_length", 4, 128) + _kv("llama.block_count", 4, 2))
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, 4 + n_kv) + good + kv
    head += _s("token_embd.weight") + struct.pack("<I2QIQ", 2, 4, 4, 0, 0)
    blob = head + b"\0" * (-len(head) % 32) + b"\0" * 64
    return blob[:len(blob) - cut] if cut else blob


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def _kv(key: str, vtype: int, value) -> bytes:
    raw = value if isinstance(value, bytes) else struct.pack("<I", value)
    return _s(key) + struct.pack("<I", vtype) + raw


def gguf_file(tmp: Path, data: bytes) -> Path:
    f = tmp / "m.gguf"
    f.write_bytes(data)
    return f


# --- the checks every case makes ----------------------------------------------------------------

def refused(code_, err: str, tmp: Path, *expect: str) -> str:
    """Exit 2, one `error:` line (the runner's stage lines aside) holding every `expect`, no
    traceback, and the payload never imported."""
    assert code_ == 2, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err[-3000:]
    assert all(ln in errors or PROGRESS.match(ln) for ln in lines), err[-3000:]
    for e in expect:
        assert e in errors[0], errors[0]
    assert "Traceback" not in err
    assert not marker(tmp).exists()
    return errors[0]


def dry_run(tmp: Path, model: Path, *extra: str, source: str = "local"):
    args = (["model=local"] if source == "local" else ["model=smollm2_135m"])
    return [*args, f"model.path={model}", *RUN, "dry_run=true", f"hydra.run.dir={tmp / 'run'}",
            *extra]


# --- model folders: code named or held (dry runs: validation decides) ---------------------------

FOLDERS = {
    # name -> (build(tmp) -> model folder, text the error names)
    "auto_map in config.json": (
        lambda t: folder(t, {**LLAMA, "auto_map": AUTO_MAP}, "modeling_x.py"),
        "config.json has 'auto_map'"),
    "auto_map in tokenizer_config.json": (
        lambda t: _with(folder(t, py="modeling_x.py"), "tokenizer_config.json",
                        {"auto_map": {"AutoTokenizer": ["modeling_x.Tok", None]}}),
        "tokenizer_config.json has 'auto_map'"),
    "auto_map nested in text_config": (
        lambda t: folder(t, {**LLAMA, "text_config": {**LLAMA, "auto_map": AUTO_MAP}},
                         "modeling_x.py"),
        "config.json has 'text_config.auto_map'"),
    "auto_map spelled with a JSON escape": (
        lambda t: folder(t, json.dumps(LLAMA)[:-1] + ', "auto\\u005fmap": {"AutoModel": '
                                                     '"other/repo--m.X"}}'),
        "config.json has 'auto_map'"),
    "auto_map inside a list": (
        lambda t: folder(t, {**LLAMA, "x": [{"y": [{"auto_map": AUTO_MAP}]}]}),
        "'x[0].y[0].auto_map'"),
    "custom_pipelines in config.json": (
        lambda t: folder(t, {**LLAMA, "custom_pipelines": {"p": {"impl": "modeling_x.P"}}},
                         "modeling_x.py"),
        "config.json has 'custom_pipelines'"),
    "auto_map in preprocessor_config.json": (
        lambda t: _with(folder(t), "preprocessor_config.json", {"auto_map": AUTO_MAP}),
        "preprocessor_config.json has 'auto_map'"),
    "stray modeling_x.py, no auto_map": (
        lambda t: folder(t, py="modeling_x.py"), "Python code ('modeling_x.py')"),
    ".py in a subfolder": (
        lambda t: folder(t, py="sub/deeper/evil.py"), "Python code ('sub/deeper/evil.py')"),
    "symlinked .py": (
        lambda t: _link(folder(t), "modeling_x.py", _outside(t, "payload.txt")),
        "Python code ('modeling_x.py')"),
    "symlinked folder holding a .py": (
        lambda t: _link(folder(t), "sub", _outside(t, "pkg/mod.py").parent),
        "Python code ('sub/mod.py')"),
    "__init__.py": (lambda t: folder(t, py="__init__.py"), "Python code ('__init__.py')"),
    # bytecode imports without its source (a sourceless module on sys.path): code as well
    ".pyc without source": (lambda t: folder(t, py="modeling_x.pyc"),
                            "Python code ('modeling_x.pyc')"),
    "extension module .so": (lambda t: folder(t, py="fast.abi3.so"),
                             "Python code ('fast.abi3.so')"),
    "upper-case .PY": (lambda t: folder(t, py="MODELING_X.PY"), "Python code ('MODELING_X.PY')"),
    # config.json itself
    "config.json not JSON": (lambda t: folder(t, "{not json"),
                             "config.json is not valid JSON"),
    "config.json a list": (lambda t: folder(t, "[1, 2]"),
                           "config.json is not a JSON object (it holds a list)"),
    "config.json 50 MB": (lambda t: _big(folder(t)), "config.json is 52428800 bytes"),
    "config.json nested 100000 deep": (lambda t: folder(t, "[" * 100_000 + "]" * 100_000),
                                       "config.json nests deeper than 64 levels"),
    "config.json nested 100 deep": (
        lambda t: folder(t, {**LLAMA, "x": json.loads('{"a":' * 100 + "1" + "}" * 100)}),
        "config.json nests deeper than 64 levels"),
    "config.json a FIFO": (lambda t: _fifo(folder(t)), "config.json is not a regular file"),
    "config.json a symlink to /dev/zero": (
        lambda t: _link(_unlink(folder(t), "config.json"), "config.json", Path("/dev/zero")),
        "config.json is not a regular file"),
    "config.json not UTF-8": (lambda t: _raw(folder(t), b'{"a": "\xff\xfe"}'),
                              "config.json is not valid JSON"),
    "a FIFO beside the weights": (lambda t: _mkfifo(folder(t), "generation_config.json"),
                                  "'generation_config.json' in the model folder is not a "
                                  "regular file"),
    "a symlink to /dev/zero beside the weights": (
        lambda t: _link(folder(t), "extra.json", Path("/dev/zero")),
        "'extra.json' in the model folder is not a regular file"),
    "text_config a list": (lambda t: folder(t, {**LLAMA, "text_config": [1]}),
                           "text_config is not an object"),
    "tokenizer_config.json not JSON": (
        lambda t: _with(folder(t), "tokenizer_config.json", "{"),
        "tokenizer_config.json is not valid JSON"),
}


def _with(m: Path, name: str, content) -> Path:
    (m / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return m


def _outside(tmp: Path, rel: str) -> Path:
    """The payload module in a folder beside the model (reached by a symlink)."""
    p = tmp / "elsewhere" / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(code(tmp))
    return p


def _link(m: Path, name: str, target: Path) -> Path:
    (m / name).symlink_to(target)
    return m


def _unlink(m: Path, name: str) -> Path:
    (m / name).unlink()
    return m


def _big(m: Path) -> Path:
    with open(m / "config.json", "r+b") as f:  # sparse: 50 MB on paper, nothing to write
        f.truncate(50 * 1024 * 1024)
    return m


def _fifo(m: Path) -> Path:
    (m / "config.json").unlink()
    return _mkfifo(m, "config.json")


def _mkfifo(m: Path, name: str) -> Path:
    os.mkfifo(m / name)  # a reader that waits for a writer would hang the check
    return m


def _raw(m: Path, data: bytes) -> Path:
    (m / "config.json").write_bytes(data)
    return m


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_model_folder_refused(name, tmp_path, capsys):
    build, expect = FOLDERS[name]
    m = build(tmp_path)
    before = tree_hash(m)
    code_, err = cli(dry_run(tmp_path, m), capsys)
    line = refused(code_, err, tmp_path, "model.path=", expect)
    assert str(m) in line  # the file (or folder) is named in full
    assert tree_hash(m) == before  # nothing stripped, nothing written into it
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_code_refusals_say_how_to_trust(tmp_path, capsys):
    m = folder(tmp_path, {**LLAMA, "auto_map": AUTO_MAP}, "modeling_x.py")
    line = refused(*cli(dry_run(tmp_path, m), capsys), tmp_path)
    assert line.endswith(TRUST_HINT)


def test_validate_command_refuses_too(tmp_path):
    """`qrecipe validate` (its own entry point, no run): the same check, the same line."""
    m = folder(tmp_path, {**LLAMA, "auto_map": AUTO_MAP}, "modeling_x.py")
    p = run_cli(["validate", "smollm2_rtn_w4", "model=local", f"model.path={m}",
                 "bits.group_size=32"], timeout=300)
    refused(p.returncode, p.stderr, tmp_path, f"model.path='{m}/config.json'",
            "config.json has 'auto_map'")


def test_a_symlink_loop_in_a_folder_ends(tmp_path, capsys):
    """Symlinked subfolders are followed, each real folder once: a loop without code is a
    valid folder (the walk ends), not a hang."""
    m = folder(tmp_path)
    (m / "loop").symlink_to(m)
    code_, err = cli(dry_run(tmp_path, m), capsys)
    assert code_ == 0, err
    assert "error" not in err


# --- trust_remote_code: command line only -------------------------------------------------------

def test_trust_on_the_command_line_passes_the_check(tmp_path, capsys):
    """The user's word lets the folder through; a dry run loads nothing, so nothing runs yet."""
    m = folder(tmp_path, {**LLAMA, "auto_map": AUTO_MAP}, "modeling_x.py")
    code_, err = cli(dry_run(tmp_path, m, "trust_remote_code=true"), capsys)
    assert code_ == 0, err
    assert not marker(tmp_path).exists()


def test_trust_in_a_recipe_file_is_refused(tmp_path):
    rec = tmp_path / "trusting.yaml"
    rec.write_text("# @package _global_\ndefaults:\n  - override /method: rtn\n"
                   "trust_remote_code: true\n")
    p = run_cli(["validate", str(rec)], timeout=300)
    refused(p.returncode, p.stderr, tmp_path, "trust_remote_code", str(rec))


def test_trust_in_a_recipe_on_the_recipe_path_is_refused(tmp_path, capsys, monkeypatch):
    """The run route: a folder on QRECIPE_RECIPE_PATH, +recipe=NAME."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "trusting.yaml").write_text(
        "# @package _global_\ntrust_remote_code: true\n")
    m = folder(tmp_path, {**LLAMA, "auto_map": AUTO_MAP}, "modeling_x.py")
    monkeypatch.setenv("QRECIPE_RECIPE_PATH", str(tmp_path / "recipes"))
    code_, err = cli(["+recipe=trusting", *dry_run(tmp_path, m)], capsys)
    refused(code_, err, tmp_path, "trust_remote_code")


# --- real runs: the folder handed to the library is checked at load -----------------------------

def test_real_run_refuses_before_loading(tiny_model_dir, tmp_path, capsys):
    m = _trojan(tiny_model_dir, tmp_path)
    code_, err = cli(["model=local", f"model.path={m}", "method=rtn", *RUN,
                      f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    refused(code_, err, tmp_path, f"model.path='{m}/config.json'", "auto_map")
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.e2e  # a real quantization (~25 s on 2 cores): the control, not a refusal
def test_trusted_code_runs(tiny_model_dir, tmp_path, capsys):
    """The payload is live: with the user's word, gptqmodel's loader imports the folder's
    module (so the refusals above are what stopped it)."""
    m = _trojan(tiny_model_dir, tmp_path)
    code_, err = cli(["model=local", f"model.path={m}", "method=rtn", *RUN,
                      f"hydra.run.dir={tmp_path / 'run'}", "trust_remote_code=true"], capsys)
    assert code_ == 0, err[-3000:]
    assert marker(tmp_path).read_text() == "imported"


def _trojan(tiny: Path, tmp: Path, m: Path | None = None) -> Path:
    """The tiny Llama (with its real tokenizer) whose config.json names a module beside it:
    a folder a real run would load (and, unchecked, import the module of)."""
    m = m or tmp / "trojan"
    shutil.copytree(tiny, m)
    conf = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**conf, "auto_map": AUTO_MAP}))
    (m / "modeling_x.py").write_text(code(tmp))
    return m


def test_planted_gguf_cache_entry_is_never_loaded(tiny_model_dir, tmp_path, capsys,
                                                   monkeypatch):
    """The cache's dequantized copy of a GGUF is what the backend loads: one qrecipe did not seal
    (planted, or from a cache.dir someone else filled) is set aside and made again, never
    imported (the fake GGUF here cannot be dequantized: that step is stubbed to stop)."""
    from qrecipe.errors import QRecipeError
    from qrecipe.inputs import models
    from qrecipe.record.fingerprint import hash_files

    src = gguf_file(tmp_path, gguf())
    cache = tmp_path / "cache"
    entry = cache / "models" / hash_files([src])[:16]  # the copy materialize would reuse
    entry.parent.mkdir(parents=True)
    _trojan(tiny_model_dir, tmp_path, entry)
    redone = []

    def stop(cfg, dest):
        redone.append(dest)
        raise QRecipeError("stub: not dequantized", key="model.path", value=str(src))

    monkeypatch.setattr(models, "_dequantize", stop)
    code_, err = cli(["model=smollm2_135m", f"model.path={src}", "method=rtn", *RUN,
                      f"cache.dir={cache}", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert code_ == 2 and "stub: not dequantized" in err
    assert redone == [entry] and not entry.exists()  # set aside, to be made again
    assert not marker(tmp_path).exists()


def test_hub_snapshot_is_checked_once_downloaded(tiny_model_dir, tmp_path, capsys,
                                                 monkeypatch):
    """A hub model: the snapshot handed to the library is checked once downloaded (stand-ins
    for the hub here: no network; validation only reads its config.json, as data)."""
    import huggingface_hub

    snap = _trojan(tiny_model_dir, tmp_path, tmp_path / "snapshot")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo, filename, revision=None, **kw: str(snap / filename))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **kw: str(snap))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda *a, **kw: (_ for _ in ()).throw(OSError("offline")))
    code_, err = cli(["model.source=hub", "model.path=org/trojan", "method=rtn", *RUN,
                      f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    refused(code_, err, tmp_path, f"model.path='{snap}/config.json'", "auto_map")


def test_gguf_tokenizer_folder_is_checked(tmp_path, capsys):
    """model.tokenizer names a folder AutoTokenizer loads: all of it is checked."""
    tok = folder(tmp_path, py="tokenization_x.py", name="tok")
    src = gguf_file(tmp_path, gguf())
    code_, err = cli(dry_run(tmp_path, src, f"model.tokenizer={tok}", source="gguf"), capsys)
    refused(code_, err, tmp_path, "model.tokenizer=", "tokenization_x.py")


def test_tokenizer_config_beside_a_gguf_is_checked(tmp_path, capsys):
    """AutoTokenizer reads tokenizer_config.json from the GGUF's own folder."""
    src = gguf_file(tmp_path, gguf())
    _with(tmp_path, "tokenizer_config.json", {"auto_map": {"AutoTokenizer": ["tok_x.T", None]}})
    code_, err = cli(dry_run(tmp_path, src, source="gguf"), capsys)
    refused(code_, err, tmp_path, "model.path=", "tokenizer_config.json has 'auto_map'")


# --- GGUF headers -----------------------------------------------------------------------------

GGUFS = {
    # name -> (file bytes, text the error names)
    "string length 2^40": (gguf(_s("general.name") + struct.pack("<IQ", 8, 1 << 40)
                                + b"x" * 16, 1), "a string length of 1099511627776"),
    "key length 2^40": (gguf(struct.pack("<Q", 1 << 40) + b"k" * 16, 1),
                        "a string length of 1099511627776"),
    "array count 2^40": (gguf(_s("x.arr") + struct.pack("<IIQ", 9, 4, 1 << 40), 1),
                         "an array length of 1099511627776"),
    "array count 2^63 (a seek past any offset)": (
        gguf(_s("x.arr") + struct.pack("<IIQ", 9, 12, 1 << 63), 1), "an array length"),
    "per-layer array of 10M": (
        gguf(_s("llama.attention.head_count") + struct.pack("<IIQ", 9, 4, 10_000_000), 1),
        "a per-layer array"),
    "tensor count 2^40": (gguf(n_tensors=1 << 40), "a tensor count of 1099511627776"),
    "key/value count 2^40": (gguf(n_kv=(1 << 40) - 4), "a key/value count of 1099511627776"),
    "unknown value type": (gguf(_s("x.odd") + struct.pack("<I", 99) + b"\0" * 8, 1),
                           "unknown value type 99"),
    "unknown array element type": (gguf(_s("x.odd") + struct.pack("<IIQ", 9, 77, 1), 1),
                                   "unknown value type 77"),
    "arrays nested 1000 deep": (gguf(_s("x.deep") + struct.pack("<I", 9)
                                     + struct.pack("<IQ", 9, 1) * 1000, 1),
                                "arrays nested deeper than 4"),
    "truncated header": (gguf(cut=200), "truncated"),
    "truncated tensor data": (gguf(cut=64), "truncated: tensor data"),
    "version 1": (gguf(version=1), "version 1"),
    "not a GGUF (magic)": (b"NOPE" + bytes(64), "starts with b'NOPE'"),
}


def _dims() -> bytes:
    """A tensor entry claiming 2^32-1 dimensions (GGUFReader would allocate them)."""
    data = bytearray(gguf())
    at = data.index(_s("token_embd.weight")) + len(_s("token_embd.weight"))
    data[at:at + 4] = struct.pack("<I", 0xFFFFFFFF)
    return bytes(data)


GGUFS["tensor with 2^32-1 dimensions"] = (_dims(), "a tensor's dimension count of 4294967295")


@pytest.mark.parametrize("name", sorted(GGUFS))
def test_gguf_header_refused(name, tmp_path, capsys):
    data, expect = GGUFS[name]
    src = gguf_file(tmp_path, data)
    code_, err = cli(dry_run(tmp_path, src, source="gguf"), capsys)
    refused(code_, err, tmp_path, f"model.path='{src}'", expect)


def test_a_well_formed_tiny_gguf_is_valid(tmp_path, capsys):
    """The control for the cases above: the same file without the absurd entry is valid."""
    src = gguf_file(tmp_path, gguf(_s("general.name") + struct.pack("<I", 8) + _s("t"), 1))
    code_, err = cli(dry_run(tmp_path, src, source="gguf"), capsys)
    assert code_ == 0, err


def test_gguf_bounds_are_checked_before_reading(tmp_path):
    """A string length of 2^40 is refused from its 8 bytes: nothing is allocated or read, and
    no other reader (gguf.GGUFReader) is tried."""
    import tracemalloc

    from qrecipe.errors import QRecipeError
    from qrecipe.inputs import gguf_meta
    src = gguf_file(tmp_path, GGUFS["string length 2^40"][0])
    tracemalloc.start()
    with pytest.raises(QRecipeError, match="beyond the limit"):
        gguf_meta.read_header(src)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20
    assert not hasattr(gguf_meta, "_header_via_ggufreader")


# --- qrecipe plan: metadata only ----------------------------------------------------------------

PLANS = {
    "config.json not JSON": (lambda t: folder(t, "not json"), "config.json is not valid JSON"),
    "config.json a list": (lambda t: folder(t, "[]"), "config.json is not a JSON object"),
    "config.json lacks the shape keys": (lambda t: folder(t, {"model_type": "llama"}),
                                         "hidden_size=None"),
    "config.json 50 MB": (lambda t: _big(folder(t)), "config.json is 52428800 bytes"),
    "config.json a FIFO": (lambda t: _fifo(folder(t)), "config.json is not a regular file"),
    "config.json nested 100000 deep": (lambda t: folder(t, "[" * 100_000 + "]" * 100_000),
                                       "config.json nests deeper than 64 levels"),
    "num_key_value_heads a string": (
        lambda t: folder(t, {**LLAMA, "num_key_value_heads": "x"}), "num_key_value_heads='x'"),
    "head_dim 1e999": (lambda t: folder(t, json.dumps(LLAMA)[:-1] + ', "head_dim": 1e999}'),
                       "head_dim=inf"),
    "GGUF string length 2^40": (lambda t: gguf_file(t, GGUFS["string length 2^40"][0]),
                                "a string length of 1099511627776"),
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_plan_refuses(name, tmp_path):
    target = PLANS[name][0](tmp_path)
    p = run_cli(["plan", str(target)], timeout=120)
    refused(p.returncode, p.stderr, tmp_path, PLANS[name][1])
    assert p.stdout == ""


def test_plan_reads_a_config_that_names_code(tmp_path):
    """plan parses config.json as data and imports nothing: a folder with auto_map (and its
    module) is planned, and the module is never imported."""
    m = folder(tmp_path, {**LLAMA, "auto_map": AUTO_MAP}, "modeling_x.py")
    p = run_cli(["plan", str(m), "--json"], timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["model"]["hidden"] == 64
    assert not marker(tmp_path).exists()


def test_planted_dequantized_gguf_in_the_cache_is_made_again(tmp_path, monkeypatch):
    """A cache folder that qrecipe did not seal (planted weights, no code) is never handed to the
    library: materialize sets it aside and dequantizes again; a sealed one is reused."""
    from omegaconf import OmegaConf

    from qrecipe.inputs import models
    from qrecipe.record.cache import seal_folder

    made = []

    def fake_dequantize(cfg, dest):
        tmp = dest.parent / ".tmp-x"
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text(json.dumps(LLAMA))
        (tmp / "model.safetensors").write_bytes(b"real")
        seal_folder(tmp, dest.name)
        os.rename(tmp, dest)
        made.append(dest)

    monkeypatch.setattr(models, "_dequantize", fake_dequantize)
    # no real GGUF here: the copy's name carries no rebuilt-tokenizer suffix
    monkeypatch.setattr(models.gguf_tokenizer, "cache_suffix", lambda src: "")
    (tmp_path / "m.gguf").write_bytes(b"")
    cfg = OmegaConf.create({"source": "gguf", "path": str(tmp_path / "m.gguf"),
                            "tokenizer": None})
    dest = tmp_path / "cache" / "models" / "0123456789abcdef"
    dest.mkdir(parents=True)
    (dest / "config.json").write_text(json.dumps(LLAMA))
    (dest / "model.safetensors").write_bytes(b"planted")
    got = models.materialize(cfg, tmp_path / "cache", lambda: "0123456789abcdef" * 4)
    assert made == [dest] and (got / "model.safetensors").read_bytes() == b"real"
    models.materialize(cfg, tmp_path / "cache", lambda: "0123456789abcdef" * 4)
    assert made == [dest]  # sealed and unchanged: reused
