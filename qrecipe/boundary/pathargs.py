"""A path given on the command line (reproduce DIR/--out, resume DIR, verify DIR, validate FILE,
show NAME, --config-dir DIR) is a path, never a config expression: `${` in one is refused,
because a path that reaches Hydra inside an override (`hydra.run.dir=PATH`) is interpolated, and
`${oc.env:VAR}` would put a secret into a folder name or a message. A path handed to Hydra as an
override value goes through `override_value`, quoted so commas, spaces, `=` and quotes stay
part of the path."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Union

from qrecipe.errors import QRecipeError


def check_path_arg(value: Union[str, Path], what: str) -> str:
    """`value` as a string, or a one-line QRecipeError naming `what` (e.g. "DIR")."""
    text = str(value)
    if "${" in text:
        raise QRecipeError("'${' is not allowed in a path argument (Hydra would read it as an "
                           "interpolation)", key=what, value=text,
                           hint="rename the folder or file")
    return text


def override_value(value: Union[str, Path], what: str) -> str:
    """`value` checked and single-quoted for a Hydra override (`key=<this>`): quotes are
    escaped, and so are the backslashes before a quote or at the end (Hydra's quoted strings)."""
    text = check_path_arg(value, what)
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"
