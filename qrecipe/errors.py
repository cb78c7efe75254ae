"""The one error type a user can cause. The CLI turns it into one line and exit code 2."""
from __future__ import annotations

from typing import Any, Iterable, Optional


class QRecipeError(Exception):
    """A problem with the user's recipe or environment, not a bug in qrecipe.

    The message names the config key, the value given and what is allowed, so the user can fix
    the YAML without reading a traceback.
    """

    def __init__(self, message: str, *, key: Optional[str] = None, value: Any = None,
                 allowed: Optional[Iterable[Any] | str] = None, hint: Optional[str] = None):
        parts = []
        if key is not None:
            parts.append(f"{key}={value!r}: {message}")
        else:
            parts.append(message)
        if allowed is not None:
            if not isinstance(allowed, str):
                allowed = ", ".join(str(a) for a in allowed)
            parts.append(f"allowed: {allowed}")
        if hint:
            parts.append(hint)
        super().__init__("; ".join(parts))
        self.key, self.value, self.allowed, self.hint = key, value, allowed, hint
