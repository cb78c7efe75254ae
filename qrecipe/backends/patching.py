"""Third-party functions qrecipe replaces, behind one guard.

Each library's patches are declared in one module (`backends/gptqmodel/patches.py`,
`backends/llmcompressor/patches.py`): the owner and name of every replaced attribute and a
fingerprint of the upstream function at the pinned version. `guarded` applies one set of them
for the length of a block and restores the originals however the block ends. Before it replaces
anything it checks that the installed library is in the supported series and that every
function is still the one the patch was written for (its source's sha256). On a mismatch, a set
that only buys speed, memory or log lines is skipped with one warning line (the library's own
code runs); a set the output depends on refuses the run (QRecipeError). `check_versions` makes
the version check at run start, before any weight is loaded (run/validate.py).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Set, Tuple

from qrecipe.errors import QRecipeError
from qrecipe.recipes.meta import installed_version

log = logging.getLogger("qrecipe")


@dataclass(frozen=True)
class Supported:
    """The versions of a library qrecipe runs with: every release of one series."""
    dist: str  # the distribution's name, as pip and importlib.metadata spell it
    series: str  # "7.6": 7.6.0, 7.6.1 ...

    def holds(self, version: str) -> bool:
        return version == self.series or version.startswith(self.series + ".")


@dataclass(frozen=True)
class Patch:
    owner: str  # "package.module:Class" (a class attribute) or "package.module" (a module's)
    name: str
    # The first 16 hex digits of the sha256 of inspect.getsource(upstream function) at the
    # pinned version (of its signature where the source cannot be read).
    sha256: str

    @property
    def key(self) -> str:
        """Class.name or module.name: how replacements and messages name the patch."""
        return f"{self.owner.rsplit(':', 1)[-1].rsplit('.', 1)[-1]}.{self.name}"


@dataclass(frozen=True)
class PatchSet:
    """Patches applied together (one feature), and what a run without them loses."""
    library: Supported
    title: str  # "the fast GPTQ layer loop (hardware.fast_layer_loop)"
    lost: str  # what the library's own code gives instead: "slower", "per-layer log lines"
    patches: Tuple[Patch, ...]
    methods: Tuple[str, ...] = ("gptq", "awq", "rtn")  # the runs that may apply it
    # The output (or whether the run can finish) depends on it: a mismatch refuses the run.
    required: bool = False


def resolve(owner: str) -> Any:
    module, _, qualname = owner.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return obj


def fingerprint(fn: Any) -> str:
    """sha256 of a function's source (first 16 hex digits); of its signature without one."""
    fn = inspect.unwrap(getattr(fn, "__func__", fn))  # classmethod/staticmethod, functools.wraps
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        text = f"signature {inspect.signature(fn)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changed(patch: Patch) -> Optional[str]:
    """Why the installed library's attribute is not the one the patch was written for."""
    try:
        owner = resolve(patch.owner)
    except (ImportError, AttributeError) as e:
        return f"{patch.owner} cannot be imported ({e})"
    if patch.name not in vars(owner):
        return f"{patch.key} is gone"
    got = fingerprint(vars(owner)[patch.name])
    if got != patch.sha256:
        return f"{patch.key} changed (source sha256 {got}, the patch is for {patch.sha256})"
    return None


def off_series(lib: Supported) -> Optional[str]:
    """"gptqmodel 7.7.0 is installed, qrecipe supports 7.6.x" or None (in range or missing:
    a missing package is Backend.check_installed's message)."""
    have = installed_version(lib.dist)
    if have == "missing" or lib.holds(have):
        return None
    return f"{lib.dist} {have} is installed, qrecipe supports {lib.series}.x"


# Libraries whose version line was said in this run: a set skipped later at patch time adds no
# second line. check_versions (run start) empties it.
_said: Set[str] = set()


def check_versions(libraries: Sequence[Supported], sets: Sequence[PatchSet], method: str,
                   backend: str) -> None:
    """At run start: one line per library outside its series. Refuses the run (QRecipeError)
    where a patch set the output depends on would be skipped; else a warning that says which
    patches the run goes without."""
    _said.clear()
    for lib in libraries:
        problem = off_series(lib)
        if problem is None:
            continue
        mine = [s for s in sets if s.library == lib and method in s.methods]
        for s in mine:
            if s.required:
                _refuse(s, problem, backend)
        if mine:
            log.warning("%s: running without %s; %s's own code runs", problem,
                        "; ".join(f"{s.title} ({s.lost})" for s in mine), lib.dist)
        else:
            log.warning("%s: an untested combination; the run goes on", problem)
        _said.add(lib.dist)


def _refuse(pset: PatchSet, problem: str, backend: str) -> None:
    raise QRecipeError(f"{problem}: {pset.title} is needed for a correct result, so the run is "
                       "refused", key="method.backend", value=backend,
                       hint=f"install the pinned version: pip install -c constraints.txt "
                            f"{pset.library.dist}")


def _skip(pset: PatchSet, problem: str) -> None:
    """The one line of a skipped set (none when the run-start check said it already)."""
    if pset.library.dist in _said and problem.startswith(pset.library.dist + " "):
        return
    log.warning("%s: running without %s (%s); %s's own code runs", problem, pset.title,
                pset.lost, pset.library.dist)


@contextmanager
def guarded(pset: PatchSet, build: Callable[[Dict[str, Any]], Dict[str, Any]],
            on: bool = True) -> Iterator[bool]:
    """Apply `pset` for the block (nothing when `on` is false: a setting left off).
    build(originals) gets each Patch.key's upstream attribute (as its owner defines it: a
    classmethod object for a classmethod) and returns each key's new value; it runs only once
    the checks pass. Yields whether the set was applied: False after
    one warning line when the installed library is not the one the patches were written for
    (a required set raises QRecipeError instead)."""
    if not on:
        yield False
        return
    problem = off_series(pset.library) or next(filter(None, map(changed, pset.patches)), None)
    if problem is not None:
        if pset.required:
            _refuse(pset, problem, pset.library.dist)
        _skip(pset, problem)
        yield False
        return
    owners = {p.key: resolve(p.owner) for p in pset.patches}
    new = build({p.key: vars(owners[p.key])[p.name] for p in pset.patches})
    if set(new) != set(owners):
        raise ValueError(f"replacements {sorted(new)} do not match {pset.title}")
    with patched({(owners[p.key], p.name): new[p.key] for p in pset.patches}):
        yield True


@contextmanager
def patched(replacements: Dict[Tuple[Any, str], Callable]) -> Iterator[None]:
    """owner.name = fn for each ((owner, name), fn) while the block runs (owner: a class or a
    module); the originals come back after it, also when it raises. An attribute the owner
    does not define itself raises KeyError before anything is replaced."""
    saved = [(owner, name, vars(owner)[name]) for owner, name in replacements]
    for (owner, name), fn in replacements.items():
        setattr(owner, name, fn)
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
