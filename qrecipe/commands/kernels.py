"""`qrecipe kernels [list] [hardware=PROFILE] [cache.dir=PATH]`: which inference kernels exist
for each checkpoint format, which are compiled with nvcc on first use, and whether each is built
in qrecipe's kernel cache now. `qrecipe kernels build [hardware=PROFILE] [--format F,...]
[--dtype D,...] [--dry-run]`: build every compiled kernel the profile may use into that cache,
once per machine image (a login node, a container build), so that no job pays the build.

The cache is cache.dir/kernels/torch_extensions (GPTQMODEL_TORCH_EXTENSIONS_DIR where set), the
folder every job points gptqmodel at (qrecipe/kernels/table.py configure_jit_cache). What is
built, and by which gptqmodel function: qrecipe/kernels/build.py. `list` and `--dry-run` never
import torch; `build` needs the GPU the jobs will run on (the builds are for its architecture)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Sequence, Tuple

from qrecipe.commands import description
from qrecipe.errors import QRecipeError
from qrecipe.kernels import build
from qrecipe.kernels.table import FORMATS, KERNELS, auto_jit, configure_jit_cache
from qrecipe.recipes.compose import compose

ACTIONS = ("list", "build")
# the overrides these commands read: the profile, its kernel settings, the cache
_KEYS = ("hardware=", "hardware.", "cache.dir=")


def _parser(action: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="qrecipe kernels " + ("build" if action == "build" else "[list]"),
        description=description(__doc__),
        epilog="Without hardware=PROFILE: every compiled kernel `auto` may pick on a GPU with "
               "hardware.allow_jit=true. A hardware.kernel=NAME override adds a named one "
               "(e.g. gemm, AWQ's GEMM kernel).")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="hardware=PROFILE, hardware.KEY=VALUE (allow_jit, kernel) or "
                         "cache.dir=PATH, as for a run")
    if action == "build":
        ap.add_argument("--format", default=",".join(build.JIT_FORMATS),
                        help=f"checkpoint formats, comma-separated (default: all of "
                             f"{', '.join(build.JIT_FORMATS)})")
        ap.add_argument("--dtype", default=",".join(build.DTYPES),
                        help="activation dtypes the Marlin builds serve, one build each "
                             f"(default: {','.join(build.DTYPES)}; a checkpoint's dtype picks)")
        ap.add_argument("--dry-run", action="store_true",
                        help="list what would be built and what is built already; no CUDA "
                             "needed, no torch imported")
    return ap


def _csv(text: str, key: str, allowed: Sequence[str]) -> Tuple[str, ...]:
    vals = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in vals if v not in allowed]
    if bad or not vals:
        raise QRecipeError("not a known value", key=key, value=",".join(bad) or text,
                           allowed=", ".join(allowed))
    return vals


def _config(overrides: Sequence[str]):
    """(hardware section or None when no profile was named, extensions dir)."""
    for o in overrides:
        if not o.startswith(_KEYS):
            raise QRecipeError("not a setting these commands read", key="override", value=o,
                               allowed="hardware=PROFILE, hardware.KEY=VALUE, cache.dir=PATH")
    cfg = compose(list(overrides))
    env = configure_jit_cache(Path(cfg.cache.dir))
    named = any(o.startswith(("hardware=", "hardware.")) for o in overrides)
    return (cfg.hardware if named else None), Path(env["GPTQMODEL_TORCH_EXTENSIONS_DIR"])


def _jobs(hw, formats, dtypes, cc=None) -> Tuple[List[build.Job], str]:
    """What to build, or why nothing: (jobs, one line when there are none)."""
    if hw is None:
        return build.plan(formats, True, "auto", dtypes, cc), "no compiled kernel fits this GPU"
    if hw.device != "cuda":
        return [], f"nothing to build: the profile runs on {hw.device} (no nvcc-built kernels)"
    jobs = build.plan(formats, bool(hw.get("allow_jit", False)), str(hw.get("kernel", "auto")),
                      dtypes, cc)
    why = "nothing to build: every kernel this profile may use needs no compile" + (
        "" if hw.get("allow_jit") else " (hardware.allow_jit is false)")
    return jobs, why


def _build(a) -> int:
    hw, root = _config(a.overrides)
    formats = _csv(a.format, "--format", build.JIT_FORMATS)
    dtypes = _csv(a.dtype, "--dtype", build.DTYPES)
    if a.dry_run:
        jobs, why = _jobs(hw, formats, dtypes)
        print(f"kernel cache: {root}")
        for j in jobs:
            state = "already built" if build.artefacts(root, j.ext) else "would build"
            print(build.line(j.ext.name, state, None, ", ".join(j.uses)))
        if not jobs:
            print(why)
        return 0
    if hw is not None and hw.device != "cuda":
        print(f"kernel cache: {root}\n{_jobs(hw, formats, dtypes)[1]}")
        return 0
    cc, gpu = build.require_cuda()  # before any output: without CUDA, one line
    jobs, why = _jobs(hw, formats, dtypes, cc)
    print(f"kernel cache: {root}")
    print(f"GPU: {gpu} (compute capability {cc})" + ("" if jobs else f"; {why}"), flush=True)
    build.import_builders(jobs)
    return build.run_build(jobs, root, out=lambda s: print(s, flush=True))


def _list(a) -> int:
    _, root = _config(a.overrides)
    print(f"kernel cache: {root}")
    print(f"{'FORMAT':<19} {'KERNEL':<13} {'BUILD':<26} {'EXTENSION':<12} IN CACHE")
    for fmt in FORMATS:
        for k in KERNELS[fmt]:
            how = ("nvcc + download" if k.download else "nvcc") if k.jit else "none"
            how += ", auto with allow_jit" if k.name in auto_jit(fmt) else ""
            exts = build.extensions_of(fmt, k.name)
            for i, e in enumerate(exts or (None,)):
                left = f"{fmt:<19} {k.name:<13} {how:<26}" if i == 0 else " " * 60
                state = ("built" if build.artefacts(root, e) else "not built") if e else "-"
                print(f"{left} {e.name if e else '-':<12} {state}")
    for fmt, ext_names in build.QUANTIZE.items():
        for n in ext_names:
            e = build.BY_NAME[n]
            print(f"{'quantize ' + fmt:<19} {'-':<13} {'nvcc, with allow_jit':<26} "
                  f"{n:<12} {'built' if build.artefacts(root, e) else 'not built'}")
    return 0


def main(argv: List[str]) -> int:
    action = argv[0] if argv[:1] and argv[0] in ACTIONS else "list"
    # intermixed: overrides may come before and after the options
    a = _parser(action).parse_intermixed_args(argv[1:] if argv[:1] == [action] else argv)
    return _build(a) if action == "build" else _list(a)
