"""What a job pays to import its libraries, with and without their bytecode caches (`.pyc`).

A job imports torch, transformers and one backend library before it does any work. Python
compiles every module it imports unless a cached `.pyc` is there; an image built with
PYTHONDONTWRITEBYTECODE=1, or packages installed with `pip install --no-compile` into a folder
the job cannot write, makes every job compile them again. Each import below runs in a fresh
interpreter, `--repeat` times per mode:

- cached: the bytecode caches as installed (written on first import where the folder allows);
- no cache: PYTHONDONTWRITEBYTECODE=1 and an empty PYTHONPYCACHEPREFIX, so nothing is read or
  written (what such an image does on every job).

    python benchmarks/import_time.py [--backend llmcompressor] [--repeat 3] [--json OUT]

Prints a table and writes JSON. No GPU needed; the imports are the ones a GPU job makes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# torch, then transformers as qrecipe's load stage imports it (tokenizer and model classes), then
# the backend; each timed on its own, in the order a job imports them
CHILD = """
import importlib, json, sys, time
t = {}
t0 = time.perf_counter(); import torch; t["torch"] = time.perf_counter() - t0
t0 = time.perf_counter()
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
t["transformers"] = time.perf_counter() - t0
t0 = time.perf_counter(); importlib.import_module(sys.argv[1])
t["backend"] = time.perf_counter() - t0
print("IMPORTS " + json.dumps(t))
"""


def one(backend: str, cached: bool) -> dict:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as empty:
        if not cached:
            env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=empty)
        out = subprocess.run([sys.executable, "-c", CHILD, backend], env=env,
                             capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("IMPORTS "))
    return {k: round(v, 2) for k, v in json.loads(line[len("IMPORTS "):]).items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="llmcompressor",
                    help="the backend library's import name (gptqmodel, llmcompressor, hqq, ...)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    one(a.backend, True)  # writes the caches where it may: "cached" then means cached
    rows = []
    for _ in range(a.repeat):
        for cached in (True, False):
            r = one(a.backend, cached)
            rows.append({"mode": "cached" if cached else "no cache", **r,
                         "total": round(sum(r.values()), 2)})
    print(f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"backend {a.backend}\n")
    print(f"| bytecode | torch s | transformers s | {a.backend} s | total s |\n|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["mode"]):
        print(f"| {r['mode']} | {r['torch']} | {r['transformers']} | {r['backend']} | {r['total']} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                  time.gmtime()),
                                            "python": platform.python_version(),
                                            "command": " ".join(["python"] + sys.argv),
                                            "backend": a.backend, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
