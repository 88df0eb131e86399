"""The HTML report: one self-contained ``index.html`` rendered from ``templates/report.html.j2``.

This module owns the HTML environment: jinja2 with autoescape on for every value, tables rendered by pandas
with ``escape=True`` (the only markup passed through unescaped), and images embedded as base64 ``data:``
URIs so the file works offline and can be mailed or archived on its own. The page has no script and loads
nothing from the network.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from ..schema import MISSING

TEMPLATES = Path(__file__).resolve().parent / "templates"


def html_table(df: pd.DataFrame | None, table_id: str | None = None, cls: str = "") -> Markup:
    """``df`` as an HTML table; pandas escapes every header and cell (``escape=True``)."""
    if df is None or df.empty:
        return Markup('<p class="muted">(empty)</p>')
    html = df.to_html(
        escape=True, index=False, border=0, na_rep=MISSING, table_id=table_id, classes=["tbl", *cls.split()]
    )
    return Markup(f'<div class="scroll">{html}</div>')


def environment(out_dir: Path) -> Environment:
    """The jinja2 environment for HTML: autoescape on, undefined names are errors."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )

    def datauri(name: str) -> str:
        path = out_dir / name
        if path.parent.resolve() != out_dir.resolve():
            raise ValueError(f"image {name!r} is not a file beside the report in {out_dir}")
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")

    env.filters["table"] = html_table
    env.filters["datauri"] = datauri
    return env


def render_html(ctx: dict[str, Any], out_dir: Path) -> str:
    """The report page for the context built by ``glidebench.report.build_context``."""
    return environment(out_dir).get_template("report.html.j2").render(**ctx)
