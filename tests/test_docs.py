"""The user docs stay true. README: at most 250 lines; every command in it either runs here as
written (offline, CPU, seconds) or names the test that runs it; its config-group table lists
exactly the options in conf/ and only schema fields; its layout is qrecipe/'s folder tree.
docs/benchmarks.md: every table comes after the command that produced it, and no lab-notebook
voice. Every relative link in README and docs/ resolves, anchors included."""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
TEXT = README.read_text()
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

# Commands that take minutes (a real quantization, a sweep, the whole suite): each names the
# test that runs it, as "FILE::TEST" (FILE alone for a CI script).
E2E = "tests/test_e2e.py::test_recipe_writes_complete_output_dir_and_model_reloads"
COVERED = {
    "make demo": E2E,  # `make setup` (pip), then +recipe=smollm2_gptq_w4
    "make test": ".ci/run",
    "python -m qrecipe +recipe=smollm2_gptq_w4": E2E,
    "python -m qrecipe +recipe=smollm2_awq_w4": "tests/test_e2e.py::test_awq_on_smollm2",
    "python -m qrecipe +recipe=smollm2_nf4": E2E,
    "python -m qrecipe +recipe=smollm2_int8": E2E,
    "python -m qrecipe +recipe=smollm2_rtn_w4": E2E,
    "python -m qrecipe +recipe=smollm2_rtn_w4 method.backend=llmcompressor": E2E,
    "python -m qrecipe +recipe=smollm2_gptq_w4 calibration.num_samples=32 eval.max_windows=4 "
    "eval.speed=false": E2E,  # exactly test_e2e.py's GPTQ run
    "python -m qrecipe verify outputs/runs/smollm2_gptq_w4/<time>":
        "tests/test_recipes_e2e.py::test_reproduce_is_bit_identical_and_verify_names_edited_files",
    "python -m qrecipe reproduce outputs/runs/smollm2_gptq_w4/<time>":
        "tests/test_recipes_e2e.py::test_reproduce_is_bit_identical_and_verify_names_edited_files",
    "python -m qrecipe -m +recipe=smollm2_gptq_w4 bits=w2,w3,w4,w8":  # the same path, tiny model
        "tests/test_sweep.py::test_basic_and_submitit_sweeps_give_the_same_report",
}
# Commands that run here in seconds, offline, on a CPU: this test runs each as written.
RUN = {
    "python -m qrecipe --help",
    "python -m qrecipe --version",
    "python -m qrecipe plan llama2_7b hardware=rtx4090_24gb",
    "python -m qrecipe --cfg job +recipe=awq_llama13b",
    "python -m qrecipe +recipe=smollm2_gptq_w4 dry_run=true",
    "python -m qrecipe +recipe=smollm2_gptq_w4 bits.group_size=128",
    "python -m qrecipe recipes",
    "python -m qrecipe show smollm2_gptq_w4",
    "python -m qrecipe validate smollm2_gptq_w4",
    "python -m qrecipe -m +recipe=smollm2_gptq_w4 bits=w2,w3,w4,w8 dry_run=true",
    "python -m qrecipe plan smollm2_135m --group-size 64",
    "python -m qrecipe plan tests/fixtures/llama2_13b hardware=t4_16gb",
}
TIMEOUT_S = 240  # each command; generous: CI runs another test process beside these


def blocks(text: str):
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def readme_commands() -> dict:
    """Every command in README's code blocks, normalized (comments and line continuations gone)
    -> the output lines shown after it (`$ ` lines in text blocks; none for bash blocks)."""
    found: dict = {}
    for lang, body in blocks(TEXT):
        if lang in ("bash", "sh", "shell"):
            for line in body.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if words:
                    found[" ".join(words)] = []
        else:
            cmd = None
            for line in body.splitlines():
                if line.startswith("$ "):
                    cmd = " ".join(shlex.split(line[2:], comments=True))
                    found[cmd] = []
                elif cmd:
                    found[cmd].append(line)
    return found


def test_readme_is_short():
    assert len(TEXT.splitlines()) <= 250


def test_every_readme_command_is_run_or_covered():
    cmds = set(readme_commands())
    unknown = cmds - RUN - set(COVERED)
    assert not unknown, f"README commands neither run by this test nor covered elsewhere: {unknown}"
    assert not RUN & set(COVERED)
    stale = (RUN | set(COVERED)) - cmds
    assert not stale, f"listed here but no longer in README: {stale}"


@pytest.mark.parametrize("target", sorted(set(COVERED.values())))
def test_covering_tests_exist(target):
    path, _, name = target.partition("::")
    assert (ROOT / path).is_file(), path
    if name:
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), flags=re.MULTILINE), target


def _argv(cmd: str):
    env, words = {}, shlex.split(cmd)
    while re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        k, _, v = words.pop(0).partition("=")
        env[k] = v
    if words[0] in ("python", "python3"):
        words[0] = sys.executable  # CI may run in a bare Python or a virtualenv: this one
    return env, words


def _tree(folder: Path) -> set:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


def _made_by_dry_runs(p: Path) -> bool:
    """What a dry run leaves: empty folders and a sweep's multirun.yaml, nothing else."""
    return p.is_dir() and all(f.is_dir() or f.name == "multirun.yaml" for f in p.rglob("*"))


@pytest.fixture(scope="module")
def ran():
    """Every RUN command once, side by side, from the repository root, offline."""
    outputs = ROOT / "outputs"
    before = _tree(outputs)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def one(cmd):
        extra, argv = _argv(cmd)
        try:
            return subprocess.run(argv, check=False, cwd=ROOT, env={**env, **extra},
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(argv, -1, "", f"timed out after {e.timeout} s")

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(sorted(RUN), pool.map(one, sorted(RUN))))
    # the dry runs leave empty run folders and a sweep's multirun.yaml under outputs/: remove
    # what they made (only that), so a test run leaves the checkout as it found it
    for p in sorted(_tree(outputs) - before, key=lambda q: len(q.parts)):
        if p.exists() and p.parent in before | {outputs} and _made_by_dry_runs(p):
            for f in sorted(p.rglob("*"), key=lambda q: -len(q.parts)):
                f.unlink() if f.is_file() else f.rmdir()
            p.rmdir()
    if outputs not in before and outputs.exists() and not any(outputs.iterdir()):
        outputs.rmdir()
    return results


@pytest.mark.parametrize("cmd", sorted(RUN))
def test_readme_command_runs_as_written(cmd, ran):
    shown = readme_commands()[cmd]
    errors = [ln for ln in shown if ln.startswith("error:")]
    p = ran[cmd]
    assert p.returncode == (2 if errors else 0), f"{cmd}: exit {p.returncode}\n{p.stderr[-3000:]}"
    for line in errors:  # the output README shows is the output it gives
        assert line in p.stderr, f"{cmd}: README shows\n{line}\nbut stderr is\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr


# --- the config-group table --------------------------------------------------------------------

def _group_rows() -> dict:
    section = TEXT[TEXT.index("### Config groups"):]
    section = section[:section.index("\n#")]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \| (.*?) \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = (re.findall(r"`([\w.]+)`", m.group(2)),
                                re.findall(r"`([\w.]+)`", m.group(3)))
    return rows


def _schema_fields() -> dict:
    from qrecipe.recipes import schema
    hints = typing.get_type_hints(schema.Config)
    fields = {g: {f.name for f in dataclasses.fields(t)} for g, t in hints.items()
              if dataclasses.is_dataclass(t)}
    fields["method"] = {f.name for c in vars(schema).values() if isinstance(c, type)
                        and dataclasses.is_dataclass(c) and issubclass(c, schema.MethodConfig)
                        for f in dataclasses.fields(c)}
    return fields


def test_config_group_table_lists_every_option_in_conf():
    rows = _group_rows()
    groups = {d.name for d in (ROOT / "conf").iterdir() if d.is_dir() and d.name != "hydra"}
    assert set(rows) == groups, f"groups in conf/: {sorted(groups)}; in README: {sorted(rows)}"
    for g in sorted(groups):
        options = sorted(f.stem for f in (ROOT / "conf" / g).glob("*.yaml"))
        assert sorted(rows[g][0]) == options, (
            f"README's row for `{g}` should list: " + ", ".join(f"`{o}`" for o in options))


def test_config_group_table_names_only_real_fields():
    fields = _schema_fields()
    for g, (_, named) in _group_rows().items():
        for name in named:
            group, _, field = name.partition(".")
            assert group == g and field in fields[g], f"`{name}` is not a field of `{g}`"


# --- the layout ----------------------------------------------------------------------------------

def test_layout_is_the_package_tree():
    body = next(b for lang, b in blocks(TEXT[TEXT.index("## Layout"):]) if lang == "text")
    listed, stack = set(), []
    for line in body.splitlines():
        m = re.match(r"( *)(\S+)/\s", line + " ")
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack[depth:] = [m.group(2)]
        if stack[0] == "qrecipe" and depth:
            listed.add("/".join(stack[1:]))
    real = {str(p.relative_to(ROOT / "qrecipe")) for p in (ROOT / "qrecipe").rglob("*")
            if p.is_dir() and "__pycache__" not in p.parts and not p.name.endswith(".egg-info")}
    assert listed == real, f"missing from README: {real - listed}; gone: {listed - real}"


# --- docs/benchmarks.md ------------------------------------------------------------------------

BENCH = (ROOT / "docs" / "benchmarks.md").read_text()


def _sections(text: str):
    """(heading, body) per heading, fenced code blocks kept whole (a '#' in them is a comment)."""
    parts, head, body, fence = [], "", [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if line.startswith("#") and not fence:
            parts.append((head, body))
            head, body = line, []
        else:
            body.append(line)
    return [*parts, (head, body)]


def test_every_benchmark_table_follows_its_command():
    tables = 0
    for head, body in _sections(BENCH):
        seen_code, fence = False, False
        for i, line in enumerate(body):
            if line.startswith("```"):
                fence = not fence
                seen_code = seen_code or not fence  # a closed block before this line
            is_table = (line.startswith("|") and not fence and 0 < i < len(body) - 1
                        and body[i + 1].startswith("|---") and not body[i - 1].startswith("|"))
            if is_table:
                tables += 1
                assert seen_code, f"{head}: a table with no command before it"
    assert tables >= 20


def test_benchmarks_read_as_results_not_a_notebook():
    assert not re.search(r"session", BENCH, flags=re.IGNORECASE)
    assert not re.search(r"\bI\b", BENCH), re.search(r".*\bI\b.*", BENCH).group(0)
    assert not re.search(r"\bwe\b", BENCH, flags=re.IGNORECASE)
    assert not re.search(r"\bissue \d", BENCH, flags=re.IGNORECASE)


# --- links ----------------------------------------------------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set:
    seen: dict = {}
    out = set()
    for head, _ in _sections(page.read_text()):
        if head:
            s = _slug(head)
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target}: no such file"
        if anchor:
            assert anchor in _anchors(dest), f"{page.name}: {target}: no such heading"


def test_capability_table_in_docs_is_the_code_table():
    """docs/recipes.md shows the one capability table (qrecipe/backends/capabilities.py)."""
    from qrecipe.backends.capabilities import markdown_table

    text = (ROOT / "docs" / "recipes.md").read_text()
    assert "\n".join(markdown_table()) in text
