"""Names that become paths, and the check that a path the harness writes stays inside its root.

Owns two rules: a name that comes from outside (a generator's ``name``, a diffusers id ``org/model``,
a folder name) becomes at most one plain, bounded path component through :func:`slug_name`, and every run
directory, run file and report file is checked by :func:`ensure_under` to lie under the folder it belongs to
(``--out``, the run directory, the report folder) before anything is written there. Torch-, numpy- and
PIL-free: :mod:`glidebench.spec` uses it.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

NAME_MAX = 64  # characters of a name's slug in a run directory's name (the whole name stays under 100)
_SAFE = re.compile(r"[A-Za-z0-9_+,:=@~-][A-Za-z0-9._+,:=@~-]*")


class PathEscapeError(ValueError):
    """A path the harness was about to write lies outside the folder it belongs to."""


def is_plain_name(name: str, max_len: int = NAME_MAX) -> bool:
    """True for a name that is already a safe path component: ASCII letters, digits and ``._+,:=@~-``, not
    starting with a dot, no ``..``, at most ``max_len`` characters."""
    return len(name) <= max_len and ".." not in name and _SAFE.fullmatch(name) is not None


def slug_name(name: str, max_len: int = NAME_MAX) -> str:
    """``name`` as one plain path component of at most ``max_len`` characters (:func:`is_plain_name`).

    A name that already is one is returned unchanged (existing run directories keep their names). Otherwise
    unicode is decomposed (NFKD) and its combining marks dropped (``é`` -> ``e``), every other character outside
    the safe set (path separators, control characters, spaces, non-Latin letters) becomes ``-``, runs of ``-``
    and ``..`` are collapsed, leading and trailing dots and dashes go, and the result is cut to ``max_len``.
    The full name is kept elsewhere (the spec's ``model_label``); the fingerprint, which covers it, keeps two
    names with one slug apart."""
    if is_plain_name(name, max_len):
        return name
    text = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    text = "".join(c if c.isascii() and (c.isalnum() or c in "._+,:=@~-") else "-" for c in text)
    text = re.sub(r"\.{2,}", ".", re.sub(r"-{2,}", "-", text)).strip(".-")
    text = text[:max_len].rstrip(".-")
    return text or "model"


def ensure_under(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` unchanged when it lies strictly inside ``root`` (after resolving ``..`` and symbolic links of
    the parts that exist); otherwise :class:`PathEscapeError` naming both."""
    root_r = Path(os.path.realpath(root))
    path_r = Path(os.path.realpath(path))
    if path_r == root_r or root_r not in path_r.parents:
        raise PathEscapeError(
            f"refusing to write {path}: it lies outside {root} (resolved: {path_r} is not inside {root_r}); "
            "a name from a plug-in, a folder or a results file must not move where glidebench writes"
        )
    return Path(path)
