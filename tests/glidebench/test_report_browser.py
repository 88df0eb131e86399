"""The HTML report in a real browser: headless Chromium (Debian's ``chromium``, CLI only) loads it with no
console errors and every image decoded (the PNGs beside the page from file://, or a single file's data URIs),
and keeps a screenshot a person can look at.

Install line (Debian 12, as root): ``apt-get update && apt-get install -y chromium``.
The screenshot is kept under the test's tmp dir and copied to ``reports/screenshots/report.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidebench.report import render_report

try:  # tests/glidebench is a plain directory today; keep working if it becomes a package
    from .fixtures_report import spy_figures, write_run_dir
except ImportError:
    from fixtures_report import spy_figures, write_run_dir

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="headless Chromium not found at /usr/bin/chromium (install: apt-get install -y chromium)",
    ),
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]
# Injected at the top of <head> of a copy of the page: records load failures, uncaught errors and
# console.error/warn, then (on window load) writes what it saw into a <pre> that --dump-dom prints.
PROBE = """<script>
window.__errs = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  __errs.push(t && t !== window && t.tagName ? "failed to load <" + t.tagName.toLowerCase() + ">"
                                             : "error: " + e.message);
}, true);
window.addEventListener("unhandledrejection", function (e) { __errs.push("unhandled rejection: " + e.reason); });
["error", "warn"].forEach(function (level) {
  var orig = console[level];
  console[level] = function () {
    __errs.push("console." + level + ": " + Array.prototype.join.call(arguments, " "));
    orig.apply(console, arguments);
  };
});
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.alt || i.src.slice(0, 60); });
  var out = document.createElement("pre");
  out.id = "__glidebench_probe";
  var tables = {};
  Array.prototype.forEach.call(document.querySelectorAll("table[id]"), function (t) {
    var r = t.getBoundingClientRect();
    var shown = t.checkVisibility ? t.checkVisibility() : r.width > 0 && r.height > 0;
    var room = t.closest("section") ? t.closest("section").clientWidth : document.body.clientWidth;
    tables[t.id] = {width: Math.round(r.width), room: room, shown: shown,
                    folded: !!t.closest("details:not([open])")};
  });
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: __errs,
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, tables: tables});
  document.body.appendChild(out);
});
</script>"""
CONSOLE_LINE = re.compile(r":CONSOLE[:(]\d*\)?\]? ?(.*)$", re.M)


def chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    env = {**os.environ, "HOME": str(profile)}  # keep Chromium's caches out of the real home
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, check=False)


def probe(page: Path, tmp: Path, *extra: str) -> tuple[dict, list[str]]:
    """Load a probed copy of ``page`` (same folder, so relative links resolve alike); return what the probe
    saw (images, load and console errors, the page's and each table's width) and the console lines Chromium
    logged."""
    html = page.read_text(encoding="utf-8")
    assert "<head>" in html
    probed = page.with_name(f"__probe_{page.name}")
    probed.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    try:
        res = chromium(probed, tmp / "profile-probe", *extra, "--dump-dom", "--virtual-time-budget=5000")
    finally:
        probed.unlink()
    m = re.search(r'<pre id="__glidebench_probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the probe did not report (rc={res.returncode}); stderr tail:\n{res.stderr[-2000:]}"
    text = m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    return json.loads(text), CONSOLE_LINE.findall(res.stderr)


class ImgCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def handle_starttag(self, tag, attrs):
        self.n += tag == "img"


def test_probe_detects_broken_images_and_console_errors(tmp_path):
    """Negative control: the checks below can fail."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!doctype html><html><head><meta charset="utf-8"></head><body><img src="missing.png" alt="gone">'
        '<script>console.error("boom"); undefinedFunction();</script></body></html>'
    )
    seen, console = probe(bad, tmp_path)
    assert seen["images"] == 1 and seen["broken"] == ["gone"]
    assert any("boom" in e for e in seen["errors"]) and any("undefinedFunction" in e for e in seen["errors"])
    assert any("boom" in line for line in console)


def test_report_in_headless_chromium(tmp_path):
    run = write_run_dir(tmp_path, "embedded-demo", unguided=True, inpaint=True)
    index = render_report([run], tmp_path / "report")
    counter = ImgCounter()
    counter.feed(index.read_text(encoding="utf-8"))
    assert counter.n == 7  # 3 Pareto plots, metrics vs scale, 2 guidance grids, inpainting

    seen, console = probe(index, tmp_path)
    assert seen["images"] == counter.n
    assert seen["broken"] == [], f"images that did not load: {seen['broken']}"
    assert seen["errors"] == [], f"page errors: {seen['errors']}"
    assert console == [], f"console messages: {console}"
    # the single file, moved away from everything else, shows every figure from its data URIs
    alone = render_report([run], tmp_path / "single", single_file=True)
    moved = tmp_path / "elsewhere" / "alone.html"
    moved.parent.mkdir()
    os.replace(alone, moved)
    seen, console = probe(moved, tmp_path)
    assert seen["images"] == counter.n and seen["broken"] == [] and seen["errors"] == [] and console == []

    shot = tmp_path / "screenshot.png"
    res = chromium(
        index,
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    )
    assert shot.exists(), f"no screenshot (rc={res.returncode}): {res.stderr[-2000:]}"
    assert CONSOLE_LINE.findall(res.stderr) == []
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        px = np.asarray(im.convert("L"), dtype=float)
    assert px.std() > 20  # not a blank page: text, tables and plots
    assert (px[:120] < 80).mean() > 0.002  # the dark title text at the top rendered
    keep = ROOT / "reports" / "screenshots" / "report.png"
    keep.parent.mkdir(parents=True, exist_ok=True)
    tmp_copy = keep.with_name(".report.png.tmp")
    shutil.copyfile(shot, tmp_copy)
    os.replace(tmp_copy, keep)


def _near(px: np.ndarray, hex_colour: str, tol: int = 24) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(px.astype(int) - rgb).max(axis=-1) <= tol).sum())


def test_multi_model_report_in_headless_chromium(tmp_path, monkeypatch):
    """Two models: every metric plot has one legend entry per model and draws interval bars, the page links
    each of those figures (loaded from file://), fits a 1280 px window (the full table folded), and the
    screenshot (kept in the test's tmp dir) shows both models' colours."""
    from glidebench.report.figstyle import CURVE_COLOURS

    figs = spy_figures(monkeypatch)
    runs = []
    models = ("embedded-short-glide-base", "embedded-short-ddim25-plugin")  # long names, as real runs have
    for name, model, samplers in (
        ("glide", models[0], (("ddim", "25"),)),
        ("other", models[1], (("plms", "50"),)),
    ):
        runs.append(write_run_dir(
            tmp_path / name, name, model=model, samplers=samplers, unguided=True, intervals=True,
            attributes=(51, 12), fid_offset=3.0 if name == "other" else 0.0,
        ))  # fmt: skip
    index = render_report(runs, tmp_path / "report")
    assert len(figs) == 5  # 3 Pareto plots, metrics against scale, KID against model evaluations
    for fig in figs:
        for model in models:
            assert sum(lab.startswith(model) for lab in fig["labels"]) == 1, (fig["title"], fig["labels"])
        for ax in fig["axes"]:
            if "Inception score" in ax["title"]:
                continue  # no interval for IS
            guided = [c for c in ax["curves"] if not c["label"].startswith("unguided")]
            assert guided and all(c["ybars"] > 0 for c in guided), (fig["title"], ax["title"])
    html = index.read_text(encoding="utf-8")
    assert "data:image" not in html  # the page links the PNGs beside it, loaded below from file://
    linked = re.findall(r'<img src="([^"]*)" alt="([^"]*)"', html)
    assert linked and all((index.parent / src).is_file() for src, _ in linked)
    imgs = [alt for _, alt in linked]
    for title in ("CLIP score vs FID", "Precision vs recall", "FID vs Inception score",
                  "Metrics against guidance scale", "KID against model evaluations per image"):  # fmt: skip
        assert sum(a == title for a in imgs) == 1, (title, imgs)

    seen, console = probe(index, tmp_path, "--window-size=1280,2000")
    assert seen["images"] == len(linked) and seen["broken"] == [] and seen["errors"] == [] and console == []
    assert seen["scrollWidth"] <= seen["innerWidth"] == 1280, seen  # no horizontal scrolling
    for table in ("results", "attributes", "overview"):  # within the page's text column: nothing to scroll
        t = seen["tables"][table]
        assert t["shown"] and t["width"] <= t["room"], (table, t)
    assert seen["tables"]["results-all"]["folded"] and not seen["tables"]["results-all"]["shown"]  # folded

    shot = tmp_path / "screenshot.png"
    res = chromium(
        index, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,9000", "--hide-scrollbars",
        "--virtual-time-budget=5000",
    )  # fmt: skip
    assert shot.exists(), f"no screenshot (rc={res.returncode}): {res.stderr[-2000:]}"
    with Image.open(shot) as im:
        px = np.asarray(im.convert("RGB"))
    assert _near(px, CURVE_COLOURS[0]) > 500 and _near(px, CURVE_COLOURS[1]) > 500  # both models drawn
