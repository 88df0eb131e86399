"""Tests for glidebench.report: structure, numbers equal to results.csv, escaping, several runs, missing
optional files, determinism, and the paper's numbers against the protocol notes (when present)."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glidebench.report import load_run, render_report
from glidebench.report import paper as paper_mod
from glidebench.report.markdown import md_code, md_escape, md_table

try:  # tests/glidebench is a plain directory today; keep working if it becomes a package
    from .fixtures_report import CAPTIONS, tile_colour, write_run_dir
except ImportError:
    from fixtures_report import CAPTIONS, tile_colour, write_run_dir

ROOT = Path(__file__).resolve().parents[2]
XSS_CAPTIONS = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "a | b `code` *bold* [link](http://x)",
)


class Page(HTMLParser):
    """Everything the tests look at in a rendered page: elements, tables by id, images, text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.all_tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        self.tags.append((tag, d))
        if tag == "table":
            self._table = []
            self.all_tables.append(self._table)
            if d.get("id"):
                self.tables[d["id"]] = self._table
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def elements(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]

    @property
    def plain(self) -> str:
        return "".join(self.text)


def linked_png(out: Path, src: str) -> Path:
    """The PNG file an ``<img src>`` of a folder report names: a plain, URL-quoted file name beside the page."""
    name = unquote(src)
    assert src and "/" not in name and ":" not in src and name.endswith(".png"), (
        f"not a file beside it: {src}"
    )
    path = out / name
    assert path.is_file(), f"image {src} names no file in {out}"
    return path


def decode_img(out: Path, src: str) -> Image.Image:
    with Image.open(linked_png(out, src)) as im:
        im.load()
        return im


def decode_data_uri(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), f"image is not an embedded PNG: {src[:60]}"
    return base64.b64decode(src[len(prefix) :])


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_table_matches_csv(
    table: list[list[str]], csv_rows: list[dict[str, str]], run_label: str | None = None
):
    """Every cell of the HTML results table equals results.csv to the precision it is printed with."""
    header, body = table[0], table[1:]
    if run_label is not None:
        body = [r for r in body if r[header.index("run")] == run_label]
    assert len(body) == len(csv_rows)
    by_id = {r["setting_id"]: r for r in csv_rows}
    for row in body:
        cells = dict(zip(header, row))
        ref = by_id[cells["setting_id"]]
        for col, text in cells.items():
            if col == "run":
                continue
            want = ref[col]
            if want == "":
                assert text == "—", (col, text)
                continue
            try:
                want_f = float(want)
            except ValueError:
                assert text == want, (col, text, want)
                continue
            decimals = len(text.split(".")[1]) if "." in text else 0
            assert abs(float(text) - want_f) <= 0.5 * 10**-decimals + 1e-12, (col, text, want)
    # columns the table leaves out must be empty in every row of results.csv
    for col in csv_rows[0]:
        if col not in header and col != "warnings":
            assert all(r[col] == "" for r in csv_rows), f"column {col} has values but is not shown"


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, Path, Page]:
    root = tmp_path_factory.mktemp("report-single")
    run = write_run_dir(root, "run-a", unguided=True)
    index = render_report([run], root / "out")
    return run, index, Page(index.read_text(encoding="utf-8"))


def test_structure_tables_plots_grids_provenance(single):
    run, index, page = single
    out = index.parent
    assert index.name == "index.html" and (out / "report.md").exists() and (out / "results.csv").exists()
    ids = {a.get("id") for t, a in page.tags if t == "section"}
    assert {"overview", "results", "plots", "samples", "paper", "throughput", "provenance"} <= ids
    # no scripts, stylesheets or frames; every image is a PNG file beside the page, none embedded
    assert not page.elements("script") and not page.elements("link") and not page.elements("iframe")
    imgs = page.elements("img")
    assert all(linked_png(out, str(a["src"])) for a in imgs)
    assert "data:image" not in index.read_text(encoding="utf-8")
    # 3 Pareto plots + metrics vs scale (one sampler: no FID-vs-evals) + 2 grids (cfg, clip)
    assert len(imgs) == 6
    alts = [str(a["alt"]) for a in imgs]
    assert any(a.startswith("CLIP score vs FID") for a in alts)
    assert any(a.startswith("Precision vs recall") for a in alts)
    assert any(a.startswith("FID vs Inception score") for a in alts)
    assert any(a.startswith("Metrics against guidance scale") for a in alts)
    for a in imgs:
        im = decode_img(out, str(a["src"]))
        assert im.format == "PNG" and im.width > 50 and im.height > 50
    # the page links the very files report.md links: each figure is stored once
    md = (out / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(linked) == 6 and all((out / name).is_file() for name in linked)
    assert {linked_png(out, str(a["src"])).name for a in imgs} == set(linked)
    # provenance, spec and header facts
    plain = page.plain
    assert "0123456789abcdef0123456789abcdef01234567" in plain  # git commit
    assert "fp-run-a-0123456789ab" in plain  # spec fingerprint
    assert "ab" * 32 in plain  # checkpoint hash
    assert "inception-v3-compat" in plain and "ViT-B/16 (openai)" in plain
    assert "cpu (test fixture)" in plain and "2.14.1" in plain
    assert '"suite": "coco-fid"' in plain  # the resolved spec
    # throughput table
    thr = [t for t in page.all_tables if t and "peak_mem_mb" in t[0]]
    assert len(thr) == 1 and thr[0][1][thr[0][0].index("images_per_s")] == "12.5"


def test_results_table_equals_results_csv(single):
    run, index, page = single
    csv_rows = read_csv_rows(run / "results.csv")
    table = page.tables["results-all"]
    assert "fid" in table[0] and "clip_score" in table[0] and "run" not in table[0]
    assert "clip_score_clamped" not in table[0]  # empty in every row: listed as not measured instead
    assert "Not measured in any setting: clip_score_clamped" in page.plain
    assert_table_matches_csv(table, csv_rows)
    # the copy beside the report is the unrounded table
    copy = pd.read_csv(index.parent / "results.csv")
    src = pd.read_csv(run / "results.csv")
    np.testing.assert_array_equal(copy["fid"].to_numpy(), src["fid"].to_numpy())
    assert list(copy["run"].unique()) == ["run-a"]


def test_markdown_table_equals_results_csv(single):
    run, index, _ = single
    md = (index.parent / "report.md").read_text()
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| setting\\_id |"))
    header = [c.strip().replace("\\_", "_") for c in lines[start].strip("|").split("|")]
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip("|").split("|")])
    unescaped = [[c.replace("\\_", "_") for c in r] for r in body]
    assert_table_matches_csv([header, *unescaped], read_csv_rows(run / "results.csv"))


def test_warnings_in_plain_words(single):
    _, _, page = single
    plain = page.plain
    assert "embedded toy set" in plain and "not MS-COCO" in plain
    assert "fewer than 2048 samples" in plain
    assert "random weights" not in plain  # the fixture records a checkpoint, not a random model


def test_grids_hold_the_right_images(single):
    """Each grid holds exactly its guidance kind's images (plus the unguided column), same captions per row."""
    run, index, page = single
    settings = list(json.loads((run / "settings.json").read_text()))
    grids = {
        str(a["alt"]).split(":")[0]: decode_img(index.parent, str(a["src"])) for a in page.elements("img")
    }
    for kind, name in (("cfg", "classifier-free"), ("clip", "CLIP guidance")):
        pixels = np.asarray(grids[name].convert("RGB")).reshape(-1, 3)
        colours, counts = np.unique(pixels, axis=0, return_counts=True)
        found = {tuple(int(v) for v in c): n for c, n in zip(colours, counts)}
        for si, sid in enumerate(settings):
            inside = sid.startswith(kind + "-") or sid.startswith("none-")
            for i in range(8):
                n = found.get(tile_colour(si, i), 0)
                if inside:
                    assert n >= 16 * 16, f"{sid} image {i} missing from the {kind} grid"
                else:
                    assert n == 0, f"{sid} image {i} wrongly in the {kind} grid"
    lists = [a for a in page.elements("ul") if a.get("class") == "captions"]
    assert lists and not page.elements("ol")  # one numbering: the caption index, no list numbers beside it
    items = [t.strip() for t in page.plain.splitlines() if re.match(r"\s*\d+ a ", t)]
    assert items[:8] == [f"{i} {c}" for i, c in enumerate(CAPTIONS)]


def test_paper_section(single):
    _, _, page = single
    comp = page.tables["paper-comparison"]
    assert comp[0] == ["quantity", "paper", "run-a"]
    rows = {r[0]: r for r in comp[1:]}
    assert rows["Best FID (setting)"][1].startswith("12.24")
    assert rows["Best FID (setting)"][2].startswith("23.02")  # cfg scale 1 (= scale 2) in the fixture
    assert rows["FID at classifier-free scale 1.5"][2] == "not run"
    assert rows["Fig. 6: classifier-free has the better best FID"][2].endswith("agrees")
    assert rows["Fig. 6: CLIP guidance has the higher CLIP score"][2].endswith("agrees")
    t2 = page.tables["paper-table2"]
    glide = next(r for r in t2 if r[0] == "GLIDE (3.5B)")
    assert glide[2] == "12.24"
    ours = t2[-1]
    assert ours[0].startswith("run-a") and ours[2] == "23.02" and "not comparable" in ours[3]
    assert "not MS-COCO" in page.plain and "Elo" in page.plain


def test_escaping_html_and_markdown(tmp_path):
    run = write_run_dir(
        tmp_path,
        "xss",
        captions=XSS_CAPTIONS,
        model="<b>m</b>",
        warnings="<script>alert(2)</script>",
        throughput=False,
    )
    index = render_report([run], tmp_path / "out", title="<i>T</i> & <script>alert(3)</script>")
    html = index.read_text(encoding="utf-8")
    page = Page(html)
    # no injected element exists: no script at all, every img is one of our PNGs beside it, no <b>/<i> from data
    assert not page.elements("script")
    assert all(linked_png(index.parent, str(a.get("src"))) for a in page.elements("img"))
    assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs)
    assert not page.elements("b") and not page.elements("i")
    # ... and the strings are shown as text
    plain = page.plain
    for text in (
        *XSS_CAPTIONS,
        "<b>m</b>",
        "<script>alert(2)</script>",
        "<i>T</i> & <script>alert(3)</script>",
    ):
        assert text in plain, text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    # Markdown: no raw markup, pipes escaped so table rows keep their cell count
    md = (index.parent / "report.md").read_text()
    outside_code = re.sub(r"^(`{3,})[^\n]*\n.*?^\1$", "", md, flags=re.M | re.S)
    assert "```" not in outside_code  # every fenced block was closed by its own fence
    assert re.search(r"(?<!\\)<", outside_code) is None  # every '<' outside code is escaped
    assert r"\<script\>alert(1)\</script\>" in md
    assert r"\<img src=x onerror=alert(1)\>" in md
    assert r"a \| b \`code\` \*bold\* \[link\](http://x)" in md
    # every row of every Markdown table has as many unescaped pipes as its header
    unescaped_pipes = re.compile(r"(?<!\\)\|")
    lines = md.splitlines()
    n_tables = 0
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            n_tables += 1
            want = len(unescaped_pipes.findall(line))
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                assert len(unescaped_pipes.findall(lines[j])) == want, lines[j]
                j += 1
    assert n_tables >= 5


def test_markdown_helpers():
    assert md_escape("a|b") == r"a\|b"
    assert md_escape("x\\y") == r"x\\y"
    assert md_escape("line1\nline2") == "line1 line2"
    assert md_escape("&lt;") == r"\&lt;"
    table = md_table(pd.DataFrame({"a|b": ["<x>", "1"]}))
    assert table.splitlines() == [r"| a\|b |", "|---|", r"| \<x\> |", "| 1 |"]
    block = md_code("x ``` y ```` z", "json")
    assert block.startswith("`````json\n") and block.endswith("\n`````")


def test_multi_run_comparison(tmp_path):
    a = write_run_dir(tmp_path / "a", "run", unguided=True)
    b = write_run_dir(
        tmp_path / "b",
        "run",
        model="tiny-base-v2",
        samplers=(("ddim", "10"), ("ddim", "25"), ("plms", "50")),
        fid_offset=3.0,
        throughput=False,
    )
    index = render_report([a, b], tmp_path / "out")
    page = Page(index.read_text(encoding="utf-8"))
    table = page.tables["results-all"]
    assert table[0][:2] == ["model", "run"]  # two models: grouped by model (test_report_compare.py)
    labels = sorted({r[1] for r in table[1:]})
    assert labels == ["a/run", "b/run"]  # same directory name: disambiguated by the parent
    assert_table_matches_csv(table, read_csv_rows(a / "results.csv"), "a/run")
    assert_table_matches_csv(table, read_csv_rows(b / "results.csv"), "b/run")
    overview = page.tables["overview"]
    assert overview[0][1:] == ["a/run", "b/run"]
    sampler_row = next(r for r in overview if r[0] == "Sampler and steps")
    assert sampler_row[1:] == ["ddim 25", "ddim 10, ddim 25, plms 50"]
    assert page.tables["paper-comparison"][0] == ["quantity", "paper", "a/run", "b/run"]
    alts = [str(x["alt"]) for x in page.elements("img")]
    assert any(s.startswith("KID against model evaluations per image") for s in alts)  # < 2,048 samples: KID
    # grids: run a (cfg, clip) + run b per sampler/steps (3 x (cfg, clip))
    assert sum(s.startswith(("classifier-free:", "CLIP guidance:")) for s in alts) == 8
    assert "b/run, ddim 10" in page.plain and "plms 50" in page.plain
    md = (index.parent / "report.md").read_text()
    assert "| model | run | setting\\_id |" in md


def test_missing_optional_files(tmp_path):
    run = write_run_dir(
        tmp_path,
        "bare",
        omit=("prompts.json", "provenance.json", "images", "spec.json"),
        throughput=False,
        results_json_only=True,
    )
    loaded = load_run(run)
    assert set(loaded.missing) == {"prompts.json", "provenance.json", "spec.json"}
    index = render_report([run], tmp_path / "out")
    page = Page(index.read_text(encoding="utf-8"))
    ids = {a.get("id") for t, a in page.tags if t == "section"}
    assert "throughput" not in ids and "provenance" in ids
    plain = page.plain
    assert "provenance.json is missing" in plain
    assert "no images/ directory" in plain
    assert "No checkpoint hashes are recorded" in plain
    assert "does not record where its captions" in plain
    # results came from results.json; the table still matches it
    rows = pd.read_json(run / "results.json")
    table = page.tables["results-all"]
    fid_col = table[0].index("fid")
    np.testing.assert_allclose([float(r[fid_col]) for r in table[1:]], rows["fid"].to_numpy(), atol=0.005)


def test_all_metrics_missing_and_inpaint(tmp_path):
    run = write_run_dir(tmp_path, "nometrics", inpaint=True, throughput=False)
    df = pd.read_csv(run / "results.csv")
    for c in ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "clip_score"):
        df[c] = math.nan
    df.to_csv(run / "results.csv", index=False)
    index = render_report([run], tmp_path / "out")
    page = Page(index.read_text(encoding="utf-8"))
    alts = [str(a["alt"]) for a in page.elements("img")]
    assert not any("vs" in a for a in alts)  # no metric plot without metrics
    assert "Not drawn: CLIP score vs FID" in page.plain
    inpaint = [a for a in page.elements("img") if str(a["alt"]).startswith("Inpainting examples")]
    assert len(inpaint) == 1
    assert str(inpaint[0]["alt"]).endswith("source, mask, result")
    table = page.tables["results-all"]
    assert "fid" not in table[0]


def test_render_is_deterministic(single, tmp_path):
    run, index, _ = single
    again = render_report([run], tmp_path / "again")
    first = sorted(p.name for p in index.parent.iterdir())
    assert first == sorted(p.name for p in again.parent.iterdir())
    for name in first:
        assert (index.parent / name).read_bytes() == (again.parent / name).read_bytes(), name
    for name in first:
        if name.endswith(".png"):
            with Image.open(index.parent / name) as im:
                assert not {"Software", "Creation Time", "date:create"} & set(im.info), name


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_report([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="glidebench run"):
        render_report([tmp_path / "empty"], tmp_path / "out")
    run = write_run_dir(tmp_path, "bad")
    pd.read_csv(run / "results.csv").drop(columns=["guidance"]).to_csv(run / "results.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks the columns \['guidance'\]"):
        render_report([run], tmp_path / "out")
    with pytest.raises(ValueError, match="at least one run"):
        render_report([], tmp_path / "out")


def test_unguided_without_scale_and_stale_files(tmp_path):
    """An unguided row with no scale (null) renders; a folder of someone else's files needs force and keeps
    them, look-alike names included (dropping the report's own stale PNGs: test_reliability_probes)."""
    run = write_run_dir(
        tmp_path, "r", unguided=True, samplers=(("ddim", "10"), ("ddim", "25")), throughput=False
    )
    df = pd.read_csv(run / "results.csv")
    df.loc[df["guidance"] == "none", "scale"] = math.nan
    df.to_csv(run / "results.csv", index=False)
    settings = json.loads((run / "settings.json").read_text())
    for v in settings.values():
        v["scale"] = None if v["guidance"] == "none" else v["scale"]
    (run / "settings.json").write_text(json.dumps(settings))
    out = tmp_path / "out"
    (out).mkdir()
    (out / "grid-old-cfg.png").write_bytes(b"stale")
    (out / "photo.png").write_bytes(b"not ours")
    page = Page(render_report([run], out, force=True).read_text(encoding="utf-8"))
    alts = [str(a["alt"]) for a in page.elements("img")]
    assert any(s.startswith("KID against model evaluations") for s in alts)  # few samples: KID, not FID
    assert sum(s.startswith("classifier-free:") for s in alts) == 2  # one per step count
    assert any("unguided" in s for s in alts)
    assert (out / "grid-old-cfg.png").read_bytes() == b"stale" and (out / "photo.png").exists()
    unguided = [
        r
        for r in page.tables["results-all"][1:]
        if r[page.tables["results-all"][0].index("guidance")] == "none"
    ]
    assert len(unguided) == 2 and all(
        r[page.tables["results-all"][0].index("scale")] == "—" for r in unguided
    )


def test_random_model_warning(tmp_path):
    run = write_run_dir(tmp_path, "rnd", model="tiny-random", kinds=("cfg",), scales=(1.0,), n_images=2)
    assert load_run(run).random_model and not load_run(write_run_dir(tmp_path, "ok", n_images=1)).random_model
    index = render_report([run], tmp_path / "out")
    assert "random weights" in Page(index.read_text(encoding="utf-8")).plain


def test_comparison_verdicts_follow_the_numbers():
    df = pd.DataFrame(
        {
            "guidance": ["cfg", "cfg", "clip"],
            "scale": [1.5, 3.0, 2.0],
            "fid": [40.0, 45.0, 30.0],
            "clip_score": [30.0, 31.0, 29.0],
            "n_samples": [30000, 30000, 30000],
            "resolution": [256, 256, 256],
            "sampler": ["ddpm"] * 3,
            "steps": ["250"] * 3,
        }
    )
    run = paper_mod.OurRun("x", df, "MS-COCO", ("GLIDE 3.5B",), "ViT-B/16")
    rows = paper_mod.comparison_table([run]).set_index("quantity")["x"]
    assert rows["FID at classifier-free scale 1.5"] == "40.00"
    assert rows["Best FID (setting)"].startswith("30.00 (CLIP guidance 2")
    assert rows["Fig. 6: classifier-free has the better best FID"].endswith("differs")
    assert rows["Fig. 6: CLIP guidance has the higher CLIP score"].endswith("differs")
    assert paper_mod.caveats(run) == []  # same model, data, n, resolution and CLIP: nothing to excuse
    with pytest.raises(ValueError, match="data_kind"):
        paper_mod.OurRun("x", df, "coco", ())


def test_table2_matches_the_paper_numbers():
    """The transcribed Table 2 and Elo scores (glidebench/report/paper.py) equal an independent transcription
    of the paper's numbers (tests/data/glide_paper_numbers.json)."""
    data = json.loads((ROOT / "tests" / "data" / "glide_paper_numbers.json").read_text())
    parsed = {r["model"]: (r["fid_trained_on_coco"], r["zero_shot_fid"]) for r in data["table2"]}
    assert len(parsed) == len(paper_mod.TABLE2)
    for e in paper_mod.TABLE2:
        name = e.model.replace("GLIDE (3.5B), reference", "GLIDE, reference")
        coco, zero = parsed[name]
        assert (None if coco is None else float(coco)) == e.fid_trained_on_coco, e.model
        if zero is None:
            assert e.zero_shot_fid is None
        else:
            assert e.approximate == zero.startswith("~")
            assert float(zero.lstrip("~")) == e.zero_shot_fid, e.model
    assert float(data["headline_zero_shot_fid"]) == paper_mod.HEADLINE_FID == 12.24
    assert [(float(a), float(b)) for a, b in data["elo_photorealism_caption"]] == [
        (photo, caption) for _, photo, caption in paper_mod.ELO
    ]


def test_report_files_are_atomic_and_readable(single):
    _, index, _ = single
    leftovers = [p for p in index.parent.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == [index.parent / ".glidebench-report.json"]  # only the manifest of what it wrote
    assert index.stat().st_mode & 0o044 == 0o044  # readable by others, not mkstemp's 0600


def test_copy_of_run_dir_renders_the_same_numbers(single, tmp_path):
    """A report is rebuilt from the run directory alone (moved elsewhere)."""
    run, index, page = single
    moved = tmp_path / "run-a"
    shutil.copytree(run, moved)
    again = Page(render_report([moved], tmp_path / "out").read_text(encoding="utf-8"))
    assert again.tables["results-all"] == page.tables["results-all"]


def test_fid_vs_evals_joins_one_run_per_sweep_entry_into_one_curve_per_sampler():
    """The nfe suite writes one run per (sampler, steps): the run name must not split the curves."""
    import pandas as pd

    from glidebench.report import sampling_cost

    rows = []
    for i, (sampler, steps, evals, fid) in enumerate(
        [
            ("ddim", "10", 20, 90.0),
            ("ddim", "25", 50, 70.0),
            ("ancestral", "25", 50, 60.0),
            ("ancestral", "50", 100, 50.0),
        ]
    ):
        rows.append(
            {"run": f"run-{i}", "model": "m", "guidance": "cfg", "scale": 3.0, "sampler": sampler,
             "steps": steps, "resolution": 64, "evals_per_image": evals, "fid": fid}
        )  # fmt: skip
    df = pd.DataFrame(rows)
    assert sampling_cost._names_the_sweep_entry(df, "run")
    assert not sampling_cost._names_the_sweep_entry(df.assign(run=["a", "a", "b", "b"]), "run")
    import unittest.mock

    from matplotlib.axes import Axes

    seen = []
    real_plot = Axes.errorbar

    def spy(self, x, y, *args, **kwargs):
        seen.append((kwargs.get("label"), list(x)))
        return real_plot(self, x, y, *args, **kwargs)

    with unittest.mock.patch.object(Axes, "errorbar", spy):
        assert sampling_cost.fid_vs_evals(df) is not None
    assert sorted(len(x) for _, x in seen) == [2, 2], seen  # two curves of two points, not four points
    seen.clear()
    quad = pd.DataFrame(rows[:2]).assign(steps=["quad10", "quad25"], run=["run-4", "run-5"], fid=[80.0, 65.0])
    with unittest.mock.patch.object(Axes, "errorbar", spy):
        assert sampling_cost.fid_vs_evals(pd.concat([df, quad], ignore_index=True)) is not None
    labels = sorted(label for label, _ in seen)
    small = df.assign(n_samples=100, kid_mean=[0.04, 0.03, 0.02, 0.01])
    # 100 samples: FID is unstable, the curve shows KID
    assert sampling_cost.fid_vs_evals(small)[1] == "kid_mean"
    assert sampling_cost.fid_vs_evals(small.assign(n_samples=5000))[1] == "fid"
    assert [len(x) for _, x in sorted(seen, key=lambda s: s[0])] == [2, 2, 2], seen  # quadN is its own curve
    assert labels[1].startswith("ddim (quadratic spacing),") and labels[2].startswith("ddim,"), labels


def test_report_few_sample_threshold_is_the_metrics_one():
    from glidebench.metrics import FID_MIN_SAMPLES
    from glidebench.report import figstyle

    assert figstyle.MIN_FID_SAMPLES == FID_MIN_SAMPLES == 2048


def test_a_guidance_interval_is_part_of_the_sweep_entry() -> None:
    """Two nfe entries that differ only in the guidance interval are two entries: the run column names them
    (so it is no series of its own), and the KID-vs-evaluations plot renders from such a table."""
    import pandas as pd

    from glidebench.report import sampling_cost

    df = pd.DataFrame(
        {
            "run": ["a", "b", "c"],
            "setting_id": ["cfg-3"] * 3,
            "guidance": ["cfg"] * 3,
            "scale": [3.0] * 3,
            "sampler": ["dpm++2m-sde", "dpm++2m-sde", "ancestral"],
            "steps": ["quad16", "quad16", "250"],
            "cfg_interval": ["", "71-639", ""],
            "n_samples": [100] * 3,
            "evals_per_image": [32.0, 25.0, 500.0],
            "kid_mean": [0.004, 0.002, 0.0045],
        }
    )
    assert sampling_cost._names_the_sweep_entry(df, "run")
    assert not sampling_cost._names_the_sweep_entry(df.drop(columns="cfg_interval"), "run")
    png, metric = sampling_cost.fid_vs_evals(df)
    assert metric == "kid_mean" and png.startswith(b"\x89PNG")


def test_intervals_differences_and_diversity_are_shown(tmp_path):
    """A run with `<metric>_lo/_hi`, diversity columns and differences.csv shows `value [lo, hi]` in
    both tables (kid_std no longer shown), marks each difference resolved or not, says whether diversity falls,
    and draws the diversity-vs-fidelity plot."""
    from glidebench.runner.results import write_differences

    run = write_run_dir(tmp_path, "run-i", kinds=("cfg",), scales=(1.0, 2.0))
    df = pd.read_csv(run / "results.csv")
    df["fid_lo"], df["fid_hi"] = df["fid"] - 1.0, df["fid"] + 2.0
    df["kid_mean_lo"], df["kid_mean_hi"] = df["kid_mean"] - 0.001, df["kid_mean"] + 0.001
    df["vendi_clip"], df["vendi_clip_lo"], df["vendi_clip_hi"] = [2.5, 1.5], [2.2, 1.3], [2.8, 1.7]
    df["vendi_pool3"] = [3.1, 2.0]
    df.to_csv(run / "results.csv", index=False)
    (run / "results.json").unlink(missing_ok=True)
    rows = [
        {"metric": "fid", "setting_a": "cfg-1", "setting_b": "cfg-2", "comparison": "neighbouring scales",
         "value_a": 10.0, "value_b": 9.5, "difference": -0.5, "difference_lo": -1.5, "difference_hi": 0.4,
         "resolved": False, "resamples": 100},
        {"metric": "vendi_clip", "setting_a": "cfg-1", "setting_b": "cfg-2", "comparison": "neighbouring scales",
         "value_a": 2.5, "value_b": 1.5, "difference": -1.0, "difference_lo": -1.3, "difference_hi": -0.7,
         "resolved": True, "resamples": 100},
    ]  # fmt: skip
    write_differences(run, rows)
    index = render_report([run], tmp_path / "out")
    page = Page(index.read_text(encoding="utf-8"))
    table = page.tables["results-all"]
    fid = df.loc[0, "fid"]
    cell = table[1][table[0].index("fid")]
    assert cell == f"{fid:.2f} [{fid - 1:.2f}, {fid + 2:.2f}]"
    assert "kid_std" not in table[0] and "fid_lo" not in table[0] and "vendi_clip" in table[0]
    diffs = page.tables["differences"]
    assert [r[-1] for r in diffs[1:]] == ["not resolved", "resolved"]
    assert "-0.50 [-1.50, 0.40]" in [c for r in diffs for c in r]
    assert "intra-caption diversity (Vendi, CLIP) falls (resolved): -1.00 [-1.30, -0.70]" in page.plain
    assert (tmp_path / "out" / "diversity-vs-fidelity.png").is_file()
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Paired differences between settings" in md and "not resolved" in md
