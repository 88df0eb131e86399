"""Which files a report writes: by default a folder whose index.html and report.md link the PNGs beside them
(each figure stored once); with ``--single-file`` one self-contained index.html (every figure embedded as a
data URI) and results.csv, no PNG and no report.md; the manifest lists what each wrote."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from glidebench.cli import main
from glidebench.paths import PathEscapeError
from glidebench.report import MANIFEST
from glidebench.report.html import linked_src

from .fixtures_report import write_run_dir
from .test_report import Page, decode_data_uri, linked_png


def _manifest(out: Path) -> set[str]:
    return set(json.loads((out / MANIFEST).read_text())["files"])


def test_folder_links_each_png_once_and_single_file_embeds_them(tmp_path: Path, capsys) -> None:
    run = write_run_dir(tmp_path, "run-a", unguided=True)
    folder, single = tmp_path / "folder", tmp_path / "single"
    assert main(["report", str(run), "--out", str(folder)]) == 0
    assert main(["report", str(run), "--out", str(single), "--single-file"]) == 0
    assert f"report: {single / 'index.html'}" in capsys.readouterr().out

    html = (folder / "index.html").read_text(encoding="utf-8")
    pngs = {p.name for p in folder.glob("*.png")}
    linked = {linked_png(folder, str(a["src"])).name for a in Page(html).elements("img")}
    assert "data:image" not in html and len(linked) == 6 and linked == pngs
    assert _manifest(folder) == {"index.html", "report.md", "results.csv"} | pngs

    page = Page((single / "index.html").read_text(encoding="utf-8"))
    embedded = {str(a["alt"]): decode_data_uri(str(a["src"])) for a in page.elements("img")}
    by_alt = {
        str(a["alt"]): (folder / unquote(str(a["src"]))).read_bytes() for a in Page(html).elements("img")
    }
    assert embedded == by_alt  # every figure, the same bytes as the folder's PNGs
    assert sorted(p.name for p in single.iterdir()) == [MANIFEST, "index.html", "results.csv"]
    assert _manifest(single) == {"index.html", "results.csv"}
    assert (single / "results.csv").read_bytes() == (folder / "results.csv").read_bytes()


def test_switching_modes_removes_only_the_reports_own_files(tmp_path: Path) -> None:
    """A folder report rendered again as one file drops its PNGs and report.md (listed in its manifest), and
    back; a file the report did not write is never touched (with --force)."""
    run = write_run_dir(tmp_path, "run-a")
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out)]) == 0
    mine = out / "notes.txt"
    mine.write_text("mine")
    assert main(["report", str(run), "--out", str(out), "--single-file", "--force"]) == 0
    assert not list(out.glob("*.png")) and not (out / "report.md").exists() and mine.read_text() == "mine"
    assert main(["report", str(run), "--out", str(out), "--force"]) == 0
    html = (out / "index.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert srcs and all(linked_png(out, s) for s in srcs) and (out / "report.md").is_file()
    assert mine.read_text() == "mine"


def test_linked_src_quotes_names_and_stays_inside_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a b%#?.png").write_bytes(b"x")
    assert linked_src(out, "a b%#?.png") == "a%20b%25%23%3F.png"
    (tmp_path / "outside.png").write_bytes(b"x")
    with pytest.raises(PathEscapeError):
        linked_src(out, "../outside.png")
    with pytest.raises(ValueError, match="not a file beside the report"):
        linked_src(out, "missing.png")
    (out / "sub").mkdir()
    (out / "sub" / "x.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a file beside the report"):
        linked_src(out, "sub/x.png")
