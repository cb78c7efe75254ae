"""`qrecipe verify DIR`: check every artifact of a finished run against its manifest.json and
name each changed, missing or extra file. Exit 0 only when the directory is intact. No torch."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

from qrecipe.errors import QRecipeError
from qrecipe.record.fingerprint import sha256_file
from qrecipe.record.outputs import MANIFEST, _artifacts, run_state


def check(run_dir: Path) -> Dict[str, List[str]]:
    """{"changed": [...], "missing": [...], "extra": [...]} relative paths (all empty: intact).
    Files the manifest lists without a hash (the run log, appended to while it is written) are
    checked for presence only."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise QRecipeError("not a directory", key="DIR", value=str(run_dir))
    state = run_state(run_dir)
    if state.status == "incomplete":
        raise QRecipeError("an unfinished run (stages done: "
                           f"{', '.join(state.stages) or 'none'}): nothing to verify yet",
                           key="DIR", value=str(run_dir), hint=f"qrecipe resume {run_dir}")
    try:
        files = json.loads((run_dir / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError):
        raise QRecipeError("no readable manifest.json: not a finished run", key="DIR",
                           value=str(run_dir)) from None
    out: Dict[str, List[str]] = {"changed": [], "missing": [], "extra": []}
    for rel, entry in sorted(files.items()):
        f = run_dir / rel
        if not f.is_file():
            out["missing"].append(rel)
        elif entry.get("sha256") and sha256_file(f) != entry["sha256"]:
            out["changed"].append(rel)
    present = {str(f.relative_to(run_dir)) for f in _artifacts(run_dir)}
    out["extra"] = sorted(present - set(files))
    return out


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="qrecipe verify", description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path, help="a run directory (holding manifest.json)")
    a = ap.parse_args(argv)
    res = check(a.dir)
    bad = [(kind, rel) for kind in ("changed", "missing", "extra") for rel in res[kind]]
    for kind, rel in bad:
        print(f"{kind}: {rel}")
    if bad:
        print(f"error: {a.dir}: {len(bad)} file(s) differ from manifest.json",
              file=sys.stderr)
        return 2
    n = len(json.loads((a.dir / MANIFEST).read_text())["files"])
    print(f"intact: {a.dir} ({n} files match manifest.json)")
    return 0
