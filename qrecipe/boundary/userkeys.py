"""The keys only the user's own command line may set: each moves or deletes files, or trusts
code, so a recipe (from any source) or a recipe's sweep parameters that set one are refused
naming the key (qrecipe/recipes/safety.py). A lock (recipe.lock.yaml) may hold them, frozen by
an older qrecipe or by the user's own run; they are dropped when a lock is read, never used: a
re-run gets them from its own command line again."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

# key -> why it is the user's alone. `hydra` covers all of hydra.* but SWEEP_PARAMS.
USER_ONLY: Dict[str, str] = {
    "force": "it moves an existing result aside",
    "cache": "it chooses which cached models are used as inputs and where files are written",
    "trust_remote_code": "it lets a model folder's Python code run",
    "model.allow_pickle": "it lets a pickle file run code when it is loaded",
    "hydra": "callbacks, launchers, search paths and run directories run code or choose where "
             "files are written",
}
SWEEP_PARAMS = "hydra.sweeper.params"  # the one hydra key a recipe may set
# Refused at any depth too (model.trust_remote_code, a library's kwargs): the name is the trust.
ANYWHERE = ("trust_remote_code",)
# What a lock read drops (its hydra: block is qrecipe's own and checked as a whole instead).
DROPPED_FROM_LOCKS = tuple(k for k in USER_ONLY if k != "hydra")


def segments(key: str) -> List[str]:
    """`+a.b[0]/c` -> [a, b, 0, c]: an override or dotted config key, prefixes dropped."""
    return [s.lstrip("+~") for s in re.split(r"[./\[\]]", key) if s.lstrip("+~")]


def user_only(key: str) -> Optional[str]:
    """The USER_ONLY entry that `key` sets (the key itself or one below it); None if none."""
    segs = segments(key)
    sweep = SWEEP_PARAMS.split(".")
    for name in ANYWHERE:
        if name in segs:
            return name
    for name in USER_ONLY:
        parts = name.split(".")
        if segs[:len(parts)] != parts:
            continue
        if name == "hydra" and (segs == sweep[:len(segs)] or segs[:len(sweep)] == sweep):
            return None  # hydra, hydra.sweeper, hydra.sweeper.params(.*): the sweep's own keys
        return name
    return None


def dropped_from_locks(key: str) -> bool:
    """`key` is (under) one a lock may hold and a lock read drops (at its own depth only)."""
    segs = segments(key)
    return any(segs[:len(n.split("."))] == n.split(".") for n in DROPPED_FROM_LOCKS)


def refusal(key: str) -> Optional[str]:
    """Why a recipe may not set `key` (one sentence), or None when it may."""
    name = user_only(key)
    if name is None:
        return None
    if name == "hydra":
        return (f"a recipe may only set {SWEEP_PARAMS} under hydra: (callbacks, launchers and "
                "run dirs stay on the command line or in conf/)")
    return (f"a user-only key ({USER_ONLY[name]}): it is set on the command line, never by a "
            "recipe")


def without_user_only(body: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a lock's plain body without DROPPED_FROM_LOCKS (each at its own depth)."""
    out = dict(body)
    for name in DROPPED_FROM_LOCKS:
        *parents, leaf = name.split(".")
        node = out
        for p in parents:  # copy the path down so the caller's body is left as it was
            if not isinstance(node.get(p), dict):
                break
            node[p] = dict(node[p])
            node = node[p]
        else:
            node.pop(leaf, None)
    return out
