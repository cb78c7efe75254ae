"""`qrecipe reproduce DIR [--out NEW] [--rtol R]`: re-run a finished run from its frozen config
(recipe.lock.yaml) into a new directory and compare the two.

Order: DIR must be intact (`qrecipe verify`); its lock passes the recipe safety rules and the
schema (a key renamed since the lock was written is named); the run repeats in a subprocess
(`python -m qrecipe --config-dir DIR --config-name recipe.lock`, which hands Hydra a private
checked copy of the lock alone: nothing else from DIR is on the search path; qrecipe/recipes/
routes.py). DIR and --out are paths, never interpolated (`${` in one is refused).
Then: environment differences (versions, device, threads, qrecipe commit), input fingerprints
(model weights, tokenizer, calibration and eval token ids: must be identical), quantized-weight
hashes (bit-identical expected when the environment is the same), and otherwise the metrics
(ppl, Δppl, size on disk) within a relative tolerance. Exit 0 only when it reproduced, 2 when it
did not (or DIR cannot be reproduced). Only the repeated run imports torch.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from qrecipe.boundary.pathargs import check_path_arg, override_value
from qrecipe.boundary.rundir import check_no_symlinks
from qrecipe.commands import description
from qrecipe.commands.verify import check
from qrecipe.errors import QRecipeError
from qrecipe.recipes.lock import check_lock
from qrecipe.record.outputs import LOCK

ENV_KEYS = ("qrecipe", "python", "machine", "platform", "cpu_count", "device", "torch_threads",
            "packages", "backend_packages", "gpus")
INPUT_KEYS = ("model_weights_sha256", "tokenizer_sha256", "calibration.token_ids_sha256",
              "eval_token_ids_sha256")


def _read(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _get(d: Dict[str, Any], dotted: str) -> Any:
    for k in dotted.split("."):
        d = d.get(k) if isinstance(d, dict) else None
    return d


def env_differences(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    diffs = []
    for k in ENV_KEYS:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) or isinstance(vb, dict):
            for sub in sorted(set(va or {}) | set(vb or {})):
                if (va or {}).get(sub) != (vb or {}).get(sub):
                    diffs.append(f"{k}.{sub}: {(va or {}).get(sub)} -> {(vb or {}).get(sub)}")
        elif va != vb:
            diffs.append(f"{k}: {va} -> {vb}")
    ga, gb = (a.get("git") or {}).get("commit"), (b.get("git") or {}).get("commit")
    if ga != gb:
        diffs.append(f"qrecipe commit: {ga} -> {gb}")
    return diffs


def _metrics(m: Dict[str, Any]) -> Dict[str, Optional[float]]:
    ev = m.get("eval") or {}
    return {"ppl": (ev.get("quantized") or {}).get("ppl"), "delta_ppl": ev.get("delta_ppl"),
            "model_dir_bytes": (m.get("size") or {}).get("model_dir_bytes")}


def compare(old: Path, new: Path, rtol: float) -> bool:
    """Print the comparison; True when `new` reproduces `old`."""
    ok = True
    diffs = env_differences(_read(old / "env.json"), _read(new / "env.json"))
    print("environment: " + ("same" if not diffs else f"{len(diffs)} difference(s)"))
    for d in diffs:
        print(f"  {d}")
    fa, fb = _read(old / "fingerprints.json"), _read(new / "fingerprints.json")
    for k in INPUT_KEYS:
        va, vb = _get(fa, k), _get(fb, k)
        if va != vb:
            ok = False
            print(f"input {k}: DIFFERENT ({va} -> {vb})")
        elif va is not None:
            print(f"input {k}: identical")
    qa, qb = fa.get("quantized_weights_sha256"), fb.get("quantized_weights_sha256")
    identical = qa is not None and qa == qb
    print(f"quantized weights: {'bit-identical' if identical else 'DIFFERENT'} "
          f"(sha256 {qa} -> {qb})")
    if not identical and not diffs:
        ok = False  # same machine, same versions: bit-identical is what reproducing means
    ma, mb = _metrics(_read(old / "metrics.json")), _metrics(_read(new / "metrics.json"))
    for k in ma:
        va, vb = ma[k], mb[k]
        if va is None and vb is None:
            continue
        within = va is not None and vb is not None and abs(vb - va) <= rtol * max(abs(va), 1e-12)
        print(f"metric {k}: {va} -> {vb} ({'within' if within else 'OUTSIDE'} rtol {rtol})")
        if not identical:
            ok = ok and within
    return ok


def rerun(run_dir: Path, out: Path) -> int:
    """The lock, checked, re-run by `python -m qrecipe` from a private copy (the cache is this
    machine's: a lock's frozen cache settings are dropped when it is read)."""
    check_lock(run_dir / LOCK)  # its one-line errors here, before a process starts
    cmd = [sys.executable, "-m", "qrecipe", "--config-dir", check_path_arg(run_dir, "DIR"),
           "--config-name", Path(LOCK).stem, "hydra.run.dir=" + override_value(out, "--out")]
    print("re-running: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    # the run's own output goes to stderr: stdout is the comparison alone
    return subprocess.run(cmd, stdout=sys.stderr).returncode


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="qrecipe reproduce", description=description(__doc__))
    ap.add_argument("dir", type=Path, help="a finished run directory")
    ap.add_argument("--out", type=Path, help="where the repeat goes (default: DIR-repro-TIME)")
    ap.add_argument("--rtol", type=float, default=0.01,
                    help="relative tolerance on metrics when weights are not bit-identical")
    a = ap.parse_args(argv)
    check_path_arg(a.dir, "DIR")
    check_no_symlinks(a.dir, key="DIR")  # a received directory is data: no link is followed
    bad = {k: v for k, v in check(a.dir).items() if v}
    if bad:
        raise QRecipeError("the run directory is not intact; `qrecipe verify` it",
                           key="DIR", value=str(a.dir), hint=json.dumps(bad))
    out = a.out or a.dir.with_name(f"{a.dir.name}-repro-{datetime.now():%Y%m%d-%H%M%S}")
    check_path_arg(out, "--out")
    if out.exists():
        raise QRecipeError("exists already: a finished result is never overwritten",
                           key="--out", value=str(out))
    rc = rerun(a.dir.resolve(), out.resolve())
    if rc != 0:
        print(f"error: the repeated run failed (exit {rc}); see {out}", file=sys.stderr)
        return rc
    ok = compare(a.dir, out, a.rtol)
    print(("reproduced: " if ok else "NOT reproduced: ") + f"{a.dir} -> {out}")
    return 0 if ok else 2
