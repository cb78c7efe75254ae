"""Exit 0 when this Python already holds what `make setup` would install: every pin of
constraints.txt at its version, qrecipe importable from this checkout, and the demo model's
package. `make setup` then skips pip (it takes ~15 s even when nothing changes)."""
from __future__ import annotations

import importlib.util
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def _pins(path: Path):
    """(name, version) of every pin `make setup` installs; a pin marked `# extra: NAME` belongs
    to an extra setup does not install (checked only where it is installed)."""
    for line in path.read_text().splitlines():
        m = PIN.match(line.strip())
        if m:
            yield m.group(1), m.group(2), "# extra:" in line


def problems() -> list:
    out = []
    for name, want, optional in _pins(ROOT / "constraints.txt"):
        try:
            have = version(name)
        except PackageNotFoundError:
            if not optional:
                out.append(f"{name} missing")
            continue
        if have.split("+")[0] != want:  # 2.13.0+cpu satisfies torch==2.13.0
            out.append(f"{name} {have} (constraints.txt: {want})")
    spec = importlib.util.find_spec("qrecipe")
    if spec is None or not spec.origin or not Path(spec.origin).is_relative_to(ROOT):
        out.append("qrecipe not installed from this checkout (pip install -e .)")
    return out


if __name__ == "__main__":
    found = problems()
    if found:
        print("setup: installing (" + "; ".join(found[:3])
              + (f"; +{len(found) - 3} more" if len(found) > 3 else "") + ")")
    sys.exit(1 if found else 0)
