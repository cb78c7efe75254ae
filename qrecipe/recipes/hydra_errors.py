"""Hydra's composition errors (unknown key, wrong type, bad YAML, unknown option) as one line.

Hydra prints them over several lines with a hint about HYDRA_FULL_ERROR; qrecipe asks Hydra to
raise them instead (unless the user set HYDRA_FULL_ERROR for the full trace) and prints one
`error:` line naming the input and, where Hydra lists them, the allowed options.
"""
from __future__ import annotations

from typing import List, Optional

from qrecipe.paths import config_dir


def _lines(e: BaseException) -> List[str]:
    return [ln.strip() for ln in str(e).splitlines() if ln.strip()]


# Hydra's plain ValueError for GROUP=null on the command line (defaults_list.py)
_NULL_GROUP = "Config group override must be a string or a list"


def is_config_error(e: BaseException) -> bool:
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    if isinstance(e, (HydraException, OmegaConfBaseException, yaml.YAMLError)):
        return True
    # OmegaConf re-raises some merge failures as plain Python errors it annotated with the key
    # (e.g. a value merged into a field that is null): still the user's input.
    return (isinstance(e, (AttributeError, KeyError, TypeError, ValueError))
            and "full_key:" in str(e)) or \
        (isinstance(e, ValueError) and str(e).startswith(_NULL_GROUP))


def one_line(e: BaseException) -> str:
    mark = getattr(e, "problem_mark", None)
    if mark is not None:  # yaml.MarkedYAMLError: the file, the line, the problem
        return (f"invalid YAML in {mark.name}, line {mark.line + 1}, column {mark.column + 1}: "
                f"{getattr(e, 'problem', None) or _lines(e)[0]}"
                f"{' (' + e.context + ')' if getattr(e, 'context', None) else ''}")
    lines = _lines(e)
    head = lines[0] if lines else type(e).__name__
    if getattr(e, "override", None):  # OverrideParseException: name the override
        return f"cannot parse the override {e.override!r}: {head}"
    if "Available options" in str(e):
        opts = []
        for ln in lines[lines.index(next(x for x in lines if x.startswith("Available"))) + 1:]:
            if ln.startswith("Config search path"):
                break
            opts.append(ln)
        return f"{head}; allowed: {', '.join(opts)}"
    if isinstance(e, (AttributeError, KeyError, TypeError)) and "full_key:" in str(e):
        key = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:"))
        return f"cannot merge the value given for {key} ({head})"
    if type(e).__name__ == "MissingMandatoryValue":
        key = str(getattr(e, "full_key", "") or "")
        return f"{head}; set it: {key}=..." if key else head
    parts = [head.rstrip(".")]
    # `raise X from None` hides the context: it repeats X's own message (qrecipe's refusals)
    cause = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    for src in ([cause] if cause is not None else []) + [e]:
        for ln in _lines(src)[: 1 if src is cause else 0] or []:
            if ln not in parts and not ln.startswith("full_key"):
                parts.append(ln.rstrip("."))
    where = [ln for ln in _lines(cause) if ln.startswith("full_key:")] if cause else []
    text = ": ".join(parts)
    if where and where[0].split(":", 1)[1].strip() not in text:
        text += f" ({where[0]})"
    return text


def null_group(argv: List[str]) -> Optional[str]:
    """GROUP=null names no option of the group (Hydra answers with a ValueError that names
    neither): one line with the group and its options."""
    for a in argv:
        key, sep, value = a.lstrip("+").partition("=")
        group = config_dir() / key
        if sep and value.strip().lower() in ("null", "~") and "." not in key and group.is_dir():
            options = sorted(p.stem for p in group.glob("*.yaml"))
            return (f"{key}={value}: a config group takes one of its options; allowed: "
                    f"{', '.join(options)}")
    return None


def recipe_without_plus(argv: List[str]) -> Optional[str]:
    """The first mistake of nearly every newcomer, as one line: `recipe=NAME` (Hydra answers
    with its defaults-list error). A recipe is not among the defaults: it is added, with a +."""
    for a in argv:
        if a.startswith("recipe="):
            return f"{a}: a recipe is added on top of the defaults: use +{a}"
    return None
