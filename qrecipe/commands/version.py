"""`qrecipe version` (also `qrecipe --version`): qrecipe's version and the installed versions of
the packages a run depends on, the ones a bug report needs. Read from the installed
distributions' metadata: nothing is imported, no torch."""
from __future__ import annotations

import argparse
import platform
from typing import List

from qrecipe import __version__
from qrecipe.commands import description
from qrecipe.recipes.meta import installed_version

# The stack of constraints.txt that decides a run's result or its speed ("missing": not
# installed; a backend or extra is needed only by the recipes that use it).
PACKAGES = ("torch", "transformers", "hydra-core", "omegaconf", "gptqmodel", "llmcompressor",
            "compressed-tensors", "bitsandbytes", "lm-eval")


def main(argv: List[str]) -> int:
    argparse.ArgumentParser(prog="qrecipe version", description=description(__doc__)) \
        .parse_args(argv)
    print(f"qrecipe {__version__} (Python {platform.python_version()})")
    print(", ".join(f"{p} {installed_version(p)}" for p in PACKAGES))
    return 0
