"""The HTML report: ``index.html`` rendered from ``templates/report.html.j2``.

This module owns the HTML environment: jinja2 with autoescape on for every value, tables rendered by pandas
with ``escape=True`` (the only markup passed through unescaped), and the images. By default an image is the
PNG file beside the page, linked by its URL-quoted file name (each one checked to be a file inside the report
folder), so a figure is stored once; a single-file report embeds the PNG bytes as base64 ``data:`` URIs
instead, so the page works on its own (mailed, kept as a CI artifact). The page has no script and loads
nothing from the network.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from ..paths import ensure_under
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


def linked_src(out_dir: Path, name: str) -> str:
    """The ``src`` of the PNG ``name`` beside the page: its URL-quoted file name, after checking that it is a
    plain file name of a file inside ``out_dir``."""
    path = ensure_under(out_dir, out_dir / name)
    if Path(name).name != name or not path.is_file() or path.parent.resolve() != out_dir.resolve():
        raise ValueError(f"image {name!r} is not a file beside the report in {out_dir}")
    return quote(name, safe="")


def embedded_src(images: Mapping[str, bytes], name: str) -> str:
    """The ``src`` of the PNG ``name`` held in memory: a base64 ``data:`` URI."""
    if name not in images:
        raise ValueError(f"image {name!r} was not drawn for this report")
    return "data:image/png;base64," + base64.b64encode(images[name]).decode("ascii")


def environment(out_dir: Path, images: Mapping[str, bytes] | None = None) -> Environment:
    """The jinja2 environment for HTML: autoescape on, undefined names are errors. ``images``: the PNGs by
    name, to embed (a single-file report); None: link the files beside the page."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["table"] = html_table
    if images is None:
        env.filters["img_src"] = lambda name: linked_src(out_dir, name)
    else:
        env.filters["img_src"] = lambda name: embedded_src(images, name)
    return env


def render_html(ctx: dict[str, Any], out_dir: Path, images: Mapping[str, bytes] | None = None) -> str:
    """The report page for the context built by ``glidebench.report.build_context``; ``images`` as in
    :func:`environment`."""
    return environment(out_dir, images).get_template("report.html.j2").render(**ctx)
