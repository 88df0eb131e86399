"""Strict keys: the one check behind every ``from_dict`` and file schema of glidebench.

Unknown keys are errors, never silently ignored (a typo must not fall back to a default); missing required
keys are errors too. The message names the object, both lists, the expected keys and, when given, a hint on
the likely cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def check_keys(
    where: str,
    data: Mapping[str, Any],
    allowed: Iterable[str],
    required: Iterable[str] = (),
    hint: str = "",
) -> None:
    """Raise ValueError when ``data`` has a key outside ``allowed`` or lacks one of ``required``."""
    allowed = set(allowed)
    unknown = sorted(set(data) - allowed)
    missing = sorted(set(required) - set(data))
    if unknown or missing:
        raise ValueError(
            f"{where}: unknown keys {unknown}, missing keys {missing}; expected {sorted(allowed)}"
            + (f" ({hint})" if hint else "")
        )
