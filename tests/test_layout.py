"""The layout's rules (issue 22), checked on every `make test`, CPU-only and fast:

- import-linter's contracts in pyproject.toml hold (layers, independent backends, no torch in
  the config layer, no cycles between siblings);
- no function in qrecipe/ is longer than MAX_LINES;
- a function-local import of a qrecipe module is allowed only where it defers torch or another
  heavy library, and then it is listed in DEFERRED (below: the one list) and its line says
  `# deferred: <why>`;
- the `--help` path (importing qrecipe.cli) never imports torch.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "qrecipe"
MAX_LINES = 60

# Every function-local import of a qrecipe module: (importing module, imported module) -> why
# it waits until the function runs. Nothing else may import a qrecipe module inside a function;
# an import that only hides an arrow (a cycle, a layer violation) belongs at the top. Empty
# today: no qrecipe module imports torch at import time, so none needs to wait.
DEFERRED: Dict[Tuple[str, str], str] = {}


def _modules() -> Iterator[Tuple[str, Path]]:
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield ".".join(parts), path


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _targets(node: ast.AST) -> List[str]:
    """The qrecipe modules an import statement imports (`from pkg import mod` names mod)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        names = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base
                 for a in node.names]
    return sorted({n for n in names if n == "qrecipe" or n.startswith("qrecipe.")})


def _local_imports() -> Iterator[Tuple[str, str, Path, int, str]]:
    """(module, imported qrecipe module, file, line, source lines) of every import statement
    inside a function body."""
    for module, path in _modules():
        source = path.read_text()
        lines = source.splitlines()
        inside = {}  # a nested function's imports are inside its parent too: each once
        for fn in ast.walk(ast.parse(source)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside.update({(n.lineno, n.col_offset): n for n in ast.walk(fn)
                               if isinstance(n, (ast.Import, ast.ImportFrom))})
        for (line, _), node in sorted(inside.items()):
            text = "\n".join(lines[line - 1:node.end_lineno])
            for target in _targets(node):
                yield module, target, path, line, text


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_import_contracts_are_kept():
    p = _lint_imports(ROOT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout and "KEPT" in p.stdout


def test_a_broken_contract_fails(tmp_path):
    """The check above can fail: a contract the package breaks (cli imports the runner) is
    reported broken with a non-zero exit."""
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""\
        [importlinter]
        root_package = qrecipe

        [importlinter:contract:broken]
        name = cli never imports the runner (false on purpose)
        type = forbidden
        source_modules = qrecipe.cli
        forbidden_modules = qrecipe.run.runner
        """))
    p = _lint_imports(tmp_path)
    assert p.returncode != 0 and "BROKEN" in p.stdout, p.stdout + p.stderr


def test_no_function_longer_than_limit():
    offenders = []
    for module, path in _modules():
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = fn.end_lineno - fn.lineno + 1
                if n > MAX_LINES:
                    offenders.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}: {n} lines")
    print("\n".join(offenders))
    assert not offenders, f"functions over {MAX_LINES} lines:\n" + "\n".join(offenders)


def test_function_local_imports_of_qrecipe_are_listed_deferrals():
    found, bad = set(), []
    for module, target, path, line, text in _local_imports():
        where = f"{path.relative_to(ROOT)}:{line} imports {target}"
        found.add((module, target))
        if (module, target) not in DEFERRED:
            bad.append(f"{where}: not in DEFERRED (move it to the top of the module)")
        elif "# deferred:" not in text:
            bad.append(f"{where}: no `# deferred: <why>` on its line")
    stale = sorted(set(DEFERRED) - found)
    bad += [f"{m} no longer imports {t} in a function: drop it from DEFERRED" for m, t in stale]
    print("deferred qrecipe imports:\n" + "\n".join(
        f"  {m} -> {t}: {why}" for (m, t), why in sorted(DEFERRED.items())))
    assert not bad, "\n".join(bad)


def test_the_local_import_check_sees_nested_and_from_imports(tmp_path, monkeypatch):
    """The scan finds an import of a qrecipe module inside a function, `from pkg import mod`
    named as the module, and leaves module-level and third-party imports alone."""
    pkg = tmp_path / "qrecipe"
    (pkg / "run").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "run" / "__init__.py").write_text("")
    (pkg / "run" / "runner.py").write_text("")
    (pkg / "a.py").write_text(textwrap.dedent("""\
        import os
        from qrecipe.run import runner

        def f():
            import json
            from qrecipe.run import runner  # deferred: torch
            def g():
                import qrecipe.run
        """))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    got = [(m, t, line) for m, t, _, line, _ in _local_imports()]
    assert got == [("qrecipe.a", "qrecipe.run.runner", 6), ("qrecipe.a", "qrecipe.run", 8)]


def test_help_path_does_not_import_torch():
    code = ("import sys, atexit\n"
            "import qrecipe.cli\n"
            "assert 'torch' not in sys.modules, 'importing qrecipe.cli imported torch'\n"
            "atexit.register(lambda: print('TORCH_LOADED' if 'torch' in sys.modules "
            "else 'TORCH_ABSENT'))\n"
            "sys.argv = ['qrecipe', '--help']\n"
            "qrecipe.cli.main()\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "TORCH_ABSENT" in p.stdout and "qrecipe" in p.stdout
