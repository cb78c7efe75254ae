"""`qrecipe kernels` and `qrecipe kernels build` on the CPU (issue 27): the table of gptqmodel
extensions and the functions that build them holds against the installed gptqmodel (a bump that
moves one fails here, not in a GPU job); which kernels a profile builds; the one-line refusal
without CUDA; the dry run and the list, torch-free; built / already built / failed from the
libraries in the cache. The builds themselves: tests/test_kernels_build_gpu.py (marked gpu)."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qrecipe.commands import run_command
from qrecipe.errors import QRecipeError
from qrecipe.kernels import build
from qrecipe.kernels.table import KERNELS, auto_jit

ROOT = Path(__file__).resolve().parents[1]
# what qrecipe/kernels/table.py configure_jit_cache sets (with setdefault: a set one wins)
JIT_ENV = ("GPTQMODEL_TORCH_EXTENSIONS_DIR", "GPTQMODEL_CACHE_DIR", "GPTQMODEL_OFFLINE")


@pytest.fixture
def no_jit_env(monkeypatch):
    """The command's configure_jit_cache may set the gptqmodel variables in this process: they
    are unset now and restored after the test (set, then deleted: monkeypatch undoes both)."""
    for k in JIT_ENV:
        monkeypatch.setenv(k, "unset")
        monkeypatch.delenv(k)


def _fake_build(root: Path, name: str, fingerprint: str = "0123456789abcdef") -> Path:
    e = build.BY_NAME[name]
    lib = root / e.subdir / fingerprint / f"{e.binary}.so"
    lib.parent.mkdir(parents=True, exist_ok=True)
    lib.write_bytes(b"\x7fELF")
    return lib


def _names(jobs):
    return [j.ext.name for j in jobs]


# -- the table against the installed gptqmodel -----------------------------------------------

@pytest.mark.parametrize("ext", build.EXTENSIONS, ids=[e.name for e in build.EXTENSIONS])
def test_builder_and_settings_are_the_installed_gptqmodels(ext, monkeypatch, tmp_path):
    """The function named builds this extension (load(name=...) resolves to the very object
    named as its handle), the library's name and folder are where `list` looks, and the folder
    follows GPTQMODEL_TORCH_EXTENSIONS_DIR (where configure_jit_cache points it)."""
    pytest.importorskip("gptqmodel")
    from gptqmodel import extension

    monkeypatch.setenv("GPTQMODEL_TORCH_EXTENSIONS_DIR", str(tmp_path))
    fn, handle = build._attr(ext.builder), build._attr(ext.handle)
    params = inspect.signature(fn).parameters
    if ext.builder == build.LOAD:
        assert list(params) == ["name", "use_cache"]
        assert params["use_cache"].kind is inspect.Parameter.KEYWORD_ONLY
        assert ext.name in extension.available_extensions()
        assert extension._extension_for_name(ext.name) is handle
    else:
        assert params == {}  # block_update_available(): build-or-load, returns bool
    assert inspect.signature(fn).return_annotation in ("bool", "dict[str, bool]", bool)
    assert handle.name == ext.binary
    assert handle.requires_cuda
    assert handle.base_build_root() == tmp_path / ext.subdir
    assert callable(handle.last_error_message)


def test_gptq_quantize_builds_the_block_update_on_first_use():
    """GPTQ.quantize calls block_update_available (the build) on CUDA unless
    GPTQMODEL_DISABLE_GPTQ_CUDA: why QUANTIZE names gptq_block for gptq with allow_jit."""
    pytest.importorskip("gptqmodel")
    from gptqmodel.quantization import gptq

    src = inspect.getsource(gptq.GPTQ)
    assert "block_update_available()" in src
    assert 'env_flag("GPTQMODEL_DISABLE_GPTQ_CUDA")' in src


def test_every_compiled_kernel_of_the_table_has_a_builder():
    for fmt, kernels in KERNELS.items():
        for k in kernels:
            exts = build.extensions_of(fmt, k.name)
            assert bool(exts) == k.jit, (fmt, k.name)
    named = {n for ns in (*build.RELOAD.values(), *build.QUANTIZE.values()) for n in ns}
    assert named == set(build.BY_NAME)  # every row used, none missing
    assert build.JIT_FORMATS == ("gptq", "awq", "compressed-tensors")
    assert build.DTYPES == ("float16", "bfloat16")


# -- what a profile builds ----------------------------------------------------------------------

def test_plan_for_a_jit_profile_builds_quantize_and_every_auto_reload_kernel():
    jobs = build.plan(build.JIT_FORMATS, allow_jit=True)
    assert _names(jobs) == ["gptq_block", "exllamav2", "marlin_fp16", "marlin_bf16"]
    uses = {j.ext.name: j.uses for j in jobs}
    assert uses["gptq_block"] == ("quantize gptq",)
    # compressed-tensors: `auto` picks AWQ Marlin on a GPU measured (an H100) and, where nothing
    # is measured, tries ExLlamaV2 and Marlin first
    assert uses["exllamav2"] == ("reload gptq exllama_v2", "reload compressed-tensors exllama_v2")
    assert "reload awq marlin" in uses["marlin_bf16"]
    assert "reload compressed-tensors awq_marlin" in uses["marlin_bf16"]
    # every kernel auto tries with allow_jit is covered
    for fmt in build.JIT_FORMATS:
        for name in auto_jit(fmt):
            assert {e.name for e in build.extensions_of(fmt, name)} <= set(uses)


def test_plan_follows_allow_jit_kernel_dtype_and_compute_capability():
    assert build.plan(build.JIT_FORMATS, allow_jit=False) == []
    assert _names(build.plan(("awq",), False, kernel="gemm")) == ["awq"]
    assert _names(build.plan(("gptq",), True, kernel="gemm")) == \
        ["gptq_block", "exllamav2", "marlin_fp16", "marlin_bf16"]  # gemm is AWQ's only
    assert _names(build.plan(("awq",), True, dtypes=("bfloat16",))) == ["marlin_bf16"]
    # below cc 8.0 auto tries no compiled kernel; a named one that runs there is still built
    assert _names(build.plan(build.JIT_FORMATS, True, cc=7.5)) == ["gptq_block"]
    assert _names(build.plan(("gptq",), True, "exllama_v2", cc=7.5)) == \
        ["gptq_block", "exllamav2"]
    assert _names(build.plan(("gptq",), True, "marlin", cc=7.5)) == ["gptq_block"]
    with pytest.raises(QRecipeError, match="downloads CUTLASS"):
        build.plan(("gptq",), True, kernel="machete", cc=9.0)


# -- build results from the cache --------------------------------------------------------------

def test_built_then_already_built_then_failed(tmp_path):
    lines = []
    jobs = build.plan(("gptq",), True, dtypes=("float16",))

    def compiles(ext):
        _fake_build(tmp_path, ext.name)
        return True, ""

    assert build.run_build(jobs, tmp_path, compiles, lines.append) == 0
    assert [ln.split()[1] for ln in lines] == ["built"] * 3
    lines.clear()
    assert build.run_build(jobs, tmp_path, lambda e: (True, ""), lines.append) == 0
    assert all(" already built " in ln for ln in lines), lines

    def fails(ext):
        raise RuntimeError(f"Extension load failed:\n- {ext.name}: ExLlamaV2 GPTQ: nvcc not "
                           "found | build_root=/x | pid=1")

    lines.clear()
    assert build.run_build(jobs[1:2], tmp_path / "empty", fails, lines.append) == 1
    assert lines[0].split()[:2] == ["exllamav2", "failed"]
    assert lines[0].endswith("s  ExLlamaV2 GPTQ: nvcc not found"), lines
    lines.clear()  # gptqmodel loaded it from somewhere else than the cache: not prebuilt here
    assert build.run_build(jobs[:1], tmp_path / "empty", lambda e: (True, ""), lines.append) == 1
    assert "loaded, but not from" in lines[0]


def test_one_line_of_a_gptqmodel_failure():
    msg = ("Extension load failed:\n- marlin_bf16: Marlin bf16: failed to build: error: "
           "x\n  y | build_root=/a | python=3.11\n- awq: other")
    assert build.one_line(msg, "marlin_bf16") == "Marlin bf16: failed to build: error: x"
    assert build.one_line("GPTQ block update: CUDA is not available.", "gptq_block") == \
        "GPTQ block update: CUDA is not available."
    assert len(build.one_line("e" * 500, "awq")) == 200


# -- the command -------------------------------------------------------------------------------

def test_build_without_cuda_is_one_line_exit_2(no_jit_env, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = run_command(["kernels", "build", "hardware=h100_80gb", f"cache.dir={tmp_path}"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: no CUDA GPU on this machine"), err
    assert not (tmp_path / "kernels" / "torch_extensions").exists()


def test_cpu_profile_and_bad_arguments(no_jit_env, tmp_path, capsys):
    assert run_command(["kernels", "build", "hardware=cpu", f"cache.dir={tmp_path}"]) == 0
    assert "nothing to build: the profile runs on cpu" in capsys.readouterr().out
    assert run_command(["kernels", "build", "hardware=t4_16gb", "--dry-run"]) == 0
    assert "(hardware.allow_jit is false)" in capsys.readouterr().out
    for argv in (["--format", "gguf"], ["--dtype", "float32"], ["model=x"],
                 ["hardware=h100_80gb", "hardware.kernel=machete"]):
        assert run_command(["kernels", "build", "--dry-run", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), (argv, err)


def test_list_reports_a_kernel_built_when_its_library_is_in_the_cache(no_jit_env, tmp_path,
                                                                      capsys):
    _fake_build(tmp_path / "kernels" / "torch_extensions", "marlin_bf16")
    assert run_command(["kernels", f"cache.dir={tmp_path}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"kernel cache: {tmp_path / 'kernels' / 'torch_extensions'}"
    def states(ext):  # the IN CACHE column of every row of this extension
        return [ln.split(f" {ext} ", 1)[1].strip() for ln in out[2:] if f" {ext} " in ln]

    # gptq marlin and awq_marlin, awq marlin, compressed-tensors marlin and awq_marlin
    assert states("marlin_bf16") == ["built"] * 5
    assert states("marlin_fp16") == ["not built"] * 5
    assert states("gptq_block") == ["not built"]
    assert any(ln.split()[:2] == ["gptq", "torch"] and ln.endswith(" -") for ln in out)


def test_dry_run_and_list_are_torch_free(tmp_path):
    """In a fresh interpreter (so no other test's imports count): --dry-run lists the plan,
    marks what the cache holds, and neither it nor `list` imports torch or gptqmodel."""
    _fake_build(tmp_path / "kernels" / "torch_extensions", "exllamav2")
    code = textwrap.dedent(f"""
        import sys
        from qrecipe.commands import run_command
        assert run_command(["kernels", "build", "hardware=h100_80gb", "--dry-run",
                            "cache.dir={tmp_path}"]) == 0
        assert run_command(["kernels", "list", "cache.dir={tmp_path}"]) == 0
        heavy = [m for m in ("torch", "gptqmodel", "transformers") if m in sys.modules]
        assert not heavy, heavy
    """)
    env = {k: v for k, v in os.environ.items() if k not in JIT_ENV}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"kernel cache: {tmp_path / 'kernels' / 'torch_extensions'}"
    plan = [ln.split("  ")[0].split() + [ln] for ln in lines[1:5]]
    assert [p[0] for p in plan] == ["gptq_block", "exllamav2", "marlin_fp16", "marlin_bf16"]
    assert " would build " in lines[1] and lines[1].endswith("quantize gptq")
    assert " already built " in lines[2]
    assert all(" would build " in ln for ln in lines[3:5])


_FINGERPRINTS = textwrap.dedent("""
    import json, sys
    from qrecipe.kernels import build
    light = sys.argv[1] == "light"
    set_up = build.light_parents() if light else None
    jobs = [build.Job(e, ()) for e in build.EXTENSIONS if e.name != "machete"]
    build.import_builders(jobs, light=light)
    # machete's fingerprint downloads CUTLASS: qrecipe refuses to build it (build.plan)
    prints = {j.ext.name: build._attr(j.ext.handle)._cache_fingerprint() for j in jobs}
    print(json.dumps({"set_up": set_up, "prints": prints,
                      "heavy": sorted(m for m in ("transformers", "gptqmodel.models",
                                                  "gptqmodel.looper") if m in sys.modules)}))
""")


def _fingerprints(mode: str) -> dict:
    env = {**os.environ, "TORCH_CUDA_ARCH_LIST": "9.0", "GPTQMODEL_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", _FINGERPRINTS, mode], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_build_only_import_skips_gptqmodels_package_init_and_builds_the_same_libraries():
    """The background child and `kernels build` import gptqmodel's builders without its package
    __init__ (build.light_parents: no transformers, no model zoo); the build fingerprints
    gptqmodel computes (the cache folder a library lands in) are the full import's, so the job
    finds the child's libraries. On another gptqmodel nothing is stubbed."""
    pytest.importorskip("gptqmodel")
    import importlib.metadata
    light = _fingerprints("light")
    if importlib.metadata.version("gptqmodel") not in build.LIGHT_IMPORT_VERSIONS:
        assert light["set_up"] is False
        return
    full = _fingerprints("full")
    assert light["set_up"] is True
    assert light["heavy"] == [] and "transformers" in full["heavy"]
    assert set(light["prints"]) == {e.name for e in build.EXTENSIONS} - {"machete"}
    assert light["prints"] == full["prints"]


def test_light_parents_only_before_gptqmodel_is_imported(monkeypatch):
    """In a process that has gptqmodel (or one of its parents) imported, nothing is replaced."""
    import types
    monkeypatch.setitem(sys.modules, "gptqmodel", types.ModuleType("gptqmodel"))
    before = dict(sys.modules)
    assert build.light_parents() is False
    assert {k: v for k, v in sys.modules.items() if k.startswith("gptqmodel")} == \
        {k: v for k, v in before.items() if k.startswith("gptqmodel")}
