"""`qrecipe verify DIR`: check every artifact of a finished run against its manifest.json and
name each changed, missing or extra file. Exit 0 only when the directory is intact. No torch.

DIR may come from someone else: a DIR that is or holds a symbolic link (or a FIFO/device) is
refused before anything is hashed, and so is a manifest entry that leaves DIR or lacks its hash
(record/outputs.manifest_files), each in one line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

from qrecipe.boundary.rundir import check_no_symlinks
from qrecipe.commands import description
from qrecipe.errors import QRecipeError
from qrecipe.record.fingerprint import sha256_file
from qrecipe.record.outputs import MANIFEST, _artifacts, manifest_files, run_state


def check(run_dir: Path) -> Dict[str, List[str]]:
    """{"changed": [...], "missing": [...], "extra": [...]} relative paths (all empty: intact).
    Files the manifest lists without a hash (the run log, appended to while it is written) are
    checked for presence only."""
    run_dir = Path(run_dir)
    check_no_symlinks(run_dir, key="DIR")
    if not run_dir.is_dir():
        raise QRecipeError("not a directory", key="DIR", value=str(run_dir))
    state = run_state(run_dir)
    if state.status == "incomplete":
        raise QRecipeError("an unfinished run (stages done: "
                           f"{', '.join(state.stages) or 'none'}): nothing to verify yet",
                           key="DIR", value=str(run_dir), hint=f"qrecipe resume {run_dir}")
    if not (run_dir / MANIFEST).is_file():
        raise QRecipeError("no readable manifest.json: not a finished run", key="DIR",
                           value=str(run_dir))
    files = manifest_files(run_dir, key="DIR")  # every entry inside DIR, hashed (or run.log)
    out: Dict[str, List[str]] = {"changed": [], "missing": [], "extra": []}
    for rel, (f, sha) in sorted(files.items()):
        if not f.is_file():
            out["missing"].append(rel)
        elif sha is not None and sha256_file(f) != sha:
            out["changed"].append(rel)
    present = {str(f.relative_to(run_dir)) for f in _artifacts(run_dir)}
    out["extra"] = sorted(present - set(files))
    return out


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="qrecipe verify", description=description(__doc__))
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
    n = len(manifest_files(a.dir))
    print(f"intact: {a.dir} ({n} files match manifest.json)")
    return 0
