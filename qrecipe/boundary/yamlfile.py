"""A YAML file from outside (a recipe, a lock) read as data, with limits, before anything builds
objects from it: a regular file of at most 256 KiB, UTF-8, one document, no tags at all (`!!python/
object`, `!!binary`, `!custom`: a recipe is plain maps, lists and scalars), at most 50 aliases and
100 000 nodes once every alias is counted as the subtree it repeats (an alias bomb is refused
from the event stream in milliseconds, never expanded), nested at most 32 levels, and no control
characters in the text or in any decoded string (`"\\e[2K"` is an ESC too): a recipe's words reach
terminals. Tab and newline are allowed (and CRLF line ends). Anything else is one QRecipeError
naming the file and, where there is one, the key.

`printable` is the other half: text from outside printed on a terminal has the same characters
escaped (names of files, folders and packs, which no parser checked)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List, Optional, Tuple

import yaml
from omegaconf._utils import get_yaml_loader

from qrecipe.boundary.jsonfile import read_bounded
from qrecipe.errors import QRecipeError

MAX_BYTES = 256 * 1024
MAX_ALIASES = 50
MAX_NODES = 100_000
MAX_DEPTH = 32
# C0 controls but tab and newline, DEL, C1 (ESC starts terminal sequences; CR rewrites a line).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Shown escaped but never refused: bidirectional overrides reorder what a terminal shows.
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with control and bidi-override characters shown as escapes (\\x1b, \\u202e)."""
    def esc(m: re.Match) -> str:
        return m.group().encode("unicode_escape").decode("ascii")
    return _BIDI.sub(esc, CONTROL.sub(esc, str(text)))


class _Refused(Exception):
    """A limit broken at `key` (dotted; '' when not inside a mapping)."""
    def __init__(self, key: str, why: str):
        super().__init__(why)
        self.key, self.why = key, why


def read_yaml(path: Path, what: str = "recipe") -> Tuple[str, Any]:
    """(text, plain data) of the YAML file `path`, checked against every limit above."""
    path = Path(path)

    def refuse(why: str) -> QRecipeError:
        return QRecipeError(f"{path}: not a readable {what}: {why}")

    data = read_bounded(path, MAX_BYTES, refuse)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise refuse(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    bad = CONTROL.search(text.replace("\r\n", "\n"))
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise QRecipeError(f"{path}: line {line}: control character {printable(bad.group())} "
                           f"is not allowed in a {what} (terminals would act on it)")
    try:
        _check_events(text)
        return text, yaml.load(text, Loader=get_yaml_loader())
    except _Refused as e:
        where = f"{printable(e.key)}: " if e.key else ""
        raise QRecipeError(f"{path}: {where}{e.why}") from None
    except yaml.YAMLError as e:
        raise QRecipeError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or (str(e).splitlines() or ["?"])[0]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return printable(f"{problem}{where}")


class _Frame:
    """One open mapping or sequence of the event stream: its size so far (nodes, aliases
    counted as what they repeat), its deepest nesting, and the key being read."""
    __slots__ = ("anchor", "mapping", "size", "depth", "key", "expect_key", "index")

    def __init__(self, anchor: Optional[str], mapping: bool):
        self.anchor, self.mapping = anchor, mapping
        self.size, self.depth, self.key, self.expect_key, self.index = 1, 1, None, True, 0


def _check_events(text: str) -> None:
    """Walk the parser's events once (linear in the text): tags, aliases, nodes, depth and the
    decoded strings, with the key path for the message."""
    stack: List[_Frame] = []
    anchors: dict = {}  # anchor -> (nodes, depth) of the subtree an alias repeats
    aliases = 0
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentStartEvent,
                           yaml.DocumentEndEvent)):
            continue  # a second document: the loader refuses it
        key = _key_path(stack)
        if getattr(ev, "tag", None) is not None:
            raise _Refused(key, f"YAML tag {printable(ev.tag)!r} is not allowed (a recipe is "
                                "plain maps, lists and values; tags can name Python objects)")
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise _Refused(key, f"nested deeper than {MAX_DEPTH} levels")
            stack.append(_Frame(ev.anchor, isinstance(ev, yaml.MappingStartEvent)))
            continue
        if isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            done = stack.pop()
            _add(stack, anchors, done.anchor, done.size, done.depth, key)
            continue
        if isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _Refused(key, f"more than {MAX_ALIASES} aliases (*name): not a recipe")
            size, depth = anchors.get(ev.anchor, (1, 0))
            _add(stack, anchors, None, size, depth, key)
            continue
        # a scalar: a key or a value
        if CONTROL.search(ev.value):
            raise _Refused(key, "a control character (an escape such as \\e or \\x1b) is not "
                                "allowed: terminals would act on it")
        if stack and stack[-1].mapping and stack[-1].expect_key:
            stack[-1].key = ev.value
        _add(stack, anchors, ev.anchor, 1, 0, key)


def _add(stack: List[_Frame], anchors: dict, anchor: Optional[str], size: int, depth: int,
         key: str) -> None:
    """A finished node (`size` nodes, `depth` levels) joins its parent."""
    if anchor is not None:
        anchors[anchor] = (size, depth)
    if not stack:
        return
    top = stack[-1]
    top.size += size
    top.depth = max(top.depth, depth + 1)
    if top.size > MAX_NODES or len(stack) - 1 + top.depth > MAX_DEPTH:
        what = (f"more than {MAX_NODES} values once aliases are expanded (an alias bomb)"
                if top.size > MAX_NODES else f"nested deeper than {MAX_DEPTH} levels")
        raise _Refused(key, what)
    if top.mapping:
        if not top.expect_key:
            top.key = None
        top.expect_key = not top.expect_key
    else:
        top.index += 1


def _key_path(stack: List[_Frame]) -> str:
    parts = []
    for f in stack:
        if f.mapping:
            if f.key is not None and not f.expect_key:
                parts.append(str(f.key))
        else:
            parts.append(f"[{f.index}]")
    return ".".join(parts).replace(".[", "[")
