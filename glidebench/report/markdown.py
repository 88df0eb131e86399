"""The Markdown report: ``report.md`` rendered from ``templates/report.md.j2``, PNGs linked beside it.

This module owns Markdown escaping. Jinja2 has no Markdown autoescape, so the environment's ``finalize``
hook plays that role: every value printed by the template is escaped (``md_escape``) unless it is an
``MdSafe`` string built here (tables whose cells were escaped one by one, fenced code blocks whose fence is
longer than any backtick run inside). A caption such as ``<script>`` or ``a | b`` therefore shows as text
in any CommonMark/GFM renderer and never breaks a table row.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).resolve().parent / "templates"
# ASCII punctuation that can start markup inline (CommonMark allows a backslash before any of them).
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&!#])")


class MdSafe(str):
    """A string that is already valid Markdown and must be printed as is."""


def md_escape(text: object) -> str:
    """``text`` as inline Markdown that renders literally: markup characters backslash-escaped, pipes
    escaped for tables, line breaks folded into spaces."""
    if isinstance(text, MdSafe):
        return text
    s = " ".join(str(text).splitlines())
    return _SPECIAL.sub(r"\\\1", s)


def md_table(df: pd.DataFrame | None) -> MdSafe:
    """A GFM table of ``df`` (already formatted as text), every header and cell escaped."""
    if df is None or df.empty:
        return MdSafe("*(empty)*")
    header = "| " + " | ".join(md_escape(c) or " " for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = [
        "| " + " | ".join(md_escape(v) for v in row) + " |" for row in df.astype(str).itertuples(index=False)
    ]
    return MdSafe("\n".join([header, rule, *body]))


def md_code(text: str, lang: str = "") -> MdSafe:
    """A fenced code block whose fence cannot be closed by the text inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return MdSafe(f"{fence}{lang}\n{text}\n{fence}")


def md_image(name: str, alt: str) -> MdSafe:
    """An image beside the report (``name`` is a plain file name we wrote)."""
    if "/" in name or "\\" in name or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"image name {name!r} is not a plain file name beside the report")
    return MdSafe(f"![{md_escape(alt)}]({name})")


def environment() -> Environment:
    """The jinja2 environment for Markdown: every printed value passes through ``md_escape``."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=False,
        finalize=md_escape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["table"] = md_table
    env.filters["code"] = md_code
    env.filters["image"] = md_image
    return env


def render_markdown(ctx: dict[str, Any]) -> str:
    """The Markdown report for the context built by ``glidebench.report.build_context``."""
    return environment().get_template("report.md.j2").render(**ctx)
