"""A name -> object registry whose errors list what exists (after catalogue).

Recipes name backends by registry name, never by a dotted `_target_` path: a shared recipe can
only choose among the adapters that ship with qrecipe, it cannot run arbitrary code.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, TypeVar

from qrecipe.errors import QRecipeError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, key: str):
        self.kind = kind  # e.g. "backend"
        self.key = key  # the config key users set, e.g. "method.backend"
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise QRecipeError(f"unknown {self.kind}", key=self.key, value=name,
                               allowed=sorted(self._items)) from None

    def names(self) -> list[str]:
        return sorted(self._items)
