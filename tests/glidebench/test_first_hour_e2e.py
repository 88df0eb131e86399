"""A new user's first hour, end to end, as the README and docs/other-models.md tell it: the INSTALLED
``glidebench`` console script (run from an empty folder, the repository not on PYTHONPATH, Hugging Face
offline, a private cache) scores

1. the embedded GLIDE (the default model: the real embedded weights, the real offline Inception);
2. a plug-in generator, ``my_model:make`` (examples/glide_sampler_plugin.py saved as my_model.py in the
   current directory) with ``--generator-args sampler=ddim,steps=5``;
3. a diffusers pipeline folder, ``diffusers:./tiny-sd`` (tests/glidebench/tiny_diffusers.py's tiny random
   Stable Diffusion pipeline, saved with ``save_pretrained``);
4. a folder of images made elsewhere at 48 px, scored against ``glidebench prompts``'s file (32 px): the run
   evaluates at the prompts file's resolution and logs the files as copied (and resized), not sampled;

then 5. ``glidebench report`` of the four runs, and 6. the report in headless Chromium (test below, skipped
without ``chromium``): no broken image or console error, one legend entry per model and interval bars on every
metric plot (from the figures the report draws, recorded by re-rendering the same runs in-process and checked
to be the very PNGs of the console report), and each model's colour on the screenshot's "Metrics against
guidance scale" plot.

A third test checks that a model keeps one colour on every figure of the report, the cost plot included, which
leaves the folder run out (it has no model-evaluation count) and once coloured the next model with the folder
run's colour.

Time, measured on the shared 2-core machine (OMP_NUM_THREADS=1, nice 10): 2 min 40 s for the module (the four
runs and the report, made once per module: 110 s; the Chromium test: 20 s; the colour check: 3 s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from .fixtures_report import spy_figures

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "glidebench"  # the installed console script of this environment
PLUGIN_SOURCE = ROOT / "examples" / "glide_sampler_plugin.py"
# small: 8 captions, classifier-free scales 1 and 3, 16 reference images (the shared protocol of all 4 runs)
PROTOCOL = ["--limit", "8", "--reference-size", "16", "--cfg", "1,3", "--clip", ""]
RUN = ["run", "coco-fid", *PROTOCOL, "--batch-size", "4", "--no-report"]
FOLDER_PX = 48  # the images made elsewhere: not the protocol's 32 px


def console(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (
        f"glidebench {' '.join(args)}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n" + (r.stderr[-3000:])
    )
    return r


def only_run(out: Path) -> Path:
    runs = sorted(p for p in out.glob("coco-fid/*") if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def rows(run: Path) -> list[dict]:
    return json.loads((run / "results.json").read_text())


@pytest.fixture(scope="module")
def first_hour(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The four runs and the report, made once with the console script from an empty folder."""
    pytest.importorskip("diffusers")
    if not SCRIPT.is_file():
        pytest.skip(f"no installed console script at {SCRIPT} (pip install -e '.[diffusers]')")
    work = tmp_path_factory.mktemp("first-hour")
    drop = ("PYTHONPATH", "GLIDEBENCH_COCO", "GLIDEBENCH_MODELS", "WORLD_SIZE", "RANK", "LOCAL_RANK")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(work / "hf"),
        "GLIDEBENCH_CACHE": str(work / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    logs: dict[str, str] = {}

    # 1. GLIDE, the embedded default
    r = console(work, env, *RUN, "--steps", "ddim5", "--out", "runs-glide")
    logs["glide"] = r.stdout + r.stderr
    # 2. a plug-in from the current directory (GLIDE's --sampler/--steps are refused with a plug-in: left out)
    (work / "my_model.py").write_text(PLUGIN_SOURCE.read_text())
    r = console(work, env, *RUN, "--generator", "my_model:make", "--generator-args", "sampler=ddim,steps=5",
                "--out", "runs-plugin")  # fmt: skip
    logs["plugin"] = r.stdout + r.stderr
    # 3. a diffusers pipeline folder, at the protocol's 32 px (the tiny pipeline's own is 16 px)
    from .tiny_diffusers import build_tiny_pipeline

    build_tiny_pipeline(work / "tiny-sd")
    r = console(work, env, *RUN, "--generator", "diffusers:./tiny-sd", "--steps", "5", "--resolution", "32",
                "--out", "runs-diffusers")  # fmt: skip
    logs["diffusers"] = r.stdout + r.stderr
    # 4. images made elsewhere, at another resolution, for the lines of a prompts file
    console(work, env, "prompts", "coco-fid", *PROTOCOL, "--out", "prompts.jsonl")
    prompts = [json.loads(line) for line in (work / "prompts.jsonl").read_text().splitlines()]
    for p in prompts:
        out = work / "my-images" / p["file"]
        out.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([p["seed"], int(10 * p["scale"])])
        Image.fromarray(rng.integers(0, 256, (FOLDER_PX, FOLDER_PX, 3), dtype=np.uint8)).save(out)
    r = console(work, env, "run", "coco-fid", "--prompts", "prompts.jsonl", "--images", "my-images",
                "--out", "runs-folder", "--no-report")  # fmt: skip
    logs["folder"] = r.stdout + r.stderr

    runs = {name: only_run(work / f"runs-{name}") for name in ("glide", "plugin", "diffusers", "folder")}
    # 5. the report of the four
    r = console(work, env, "report", *(str(p) for p in runs.values()), "--out", str(work / "report"))
    logs["report"] = r.stdout + r.stderr
    return {"work": work, "runs": runs, "logs": logs, "prompts": prompts, "report": work / "report"}


MODELS = {
    "glide": "embedded-short",
    "plugin": "embedded-short-ddim5",
    "diffusers": "tiny-sd",
    "folder": "my-images",
}


@pytest.mark.slow
def test_first_hour_runs_and_report(first_hour: dict) -> None:
    runs, logs = first_hour["runs"], first_hour["logs"]
    for name, run in runs.items():
        got = rows(run)
        assert sorted(r["setting_id"] for r in got) == ["cfg-1", "cfg-3"], (name, got)
        assert {r["model"] for r in got} == {MODELS[name]}, name
        assert {r["resolution"] for r in got} == {32}, (name, [r["resolution"] for r in got])
        assert all(r["n_samples"] == 8 and np.isfinite(r["kid_mean"]) for r in got), (name, got)
        assert all(np.isfinite(r["fid_lo"]) and np.isfinite(r["fid_hi"]) for r in got), name  # intervals
        assert len(list((run / "images").rglob("*.png"))) == 16, name
    assert "with the generator embedded-short-ddim5 (my_model:make)" in logs["plugin"]
    assert "ddim, 5 steps" in logs["plugin"]
    assert "with the generator tiny-sd (diffusers:./tiny-sd)" in logs["diffusers"]

    # 4. the folder run: the prompts file's protocol (32 px), its files copied and resized, nothing sampled
    prompts, folder = first_hour["prompts"], runs["folder"]
    assert len(prompts) == 16 and {p["resolution"] for p in prompts} == {32}
    assert json.loads((folder / "spec.json").read_text())["resolution"] == 32
    for png in (folder / "images").rglob("*.png"):
        with Image.open(png) as im:
            assert im.size == (32, 32), (png, im.size)
    log = logs["folder"]
    chunks = [x for x in log.splitlines() if re.search(r"\[cfg-[13]\] chunk \d+/\d+", x)]
    assert chunks and all("copied" in x and "sampled" not in x for x in chunks), chunks
    assert sum(int(m) for x in chunks for m in re.findall(r"(\d+) copied", x)) == 16, chunks
    for setting in ("cfg-1", "cfg-3"):
        assert re.search(rf"\[{setting}\] note: .*other sizes than 32 px.*resized", log), log[-3000:]
        assert f"[{setting}] generation: 8 images written (1 chunks copied" in log, log[-3000:]

    # 5. the report: one page for the four, each model named, one protocol (no comparability warning)
    report = first_hour["report"]
    index, md = report / "index.html", report / "report.md"
    assert index.is_file() and md.is_file(), sorted(p.name for p in report.iterdir())
    html, text = index.read_text(encoding="utf-8"), md.read_text(encoding="utf-8")
    for model in MODELS.values():
        assert f"| {model} " in text or f"| {model} |" in text, model
        assert model in html, model
    assert "not evaluated under one protocol" not in text, text[:3000]
    combined = pd.read_csv(report / "results.csv")
    assert sorted(combined["model"].unique()) == sorted(MODELS.values())


# --- 6. the report in headless Chromium --------------------------------------------------------------------

LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    var r = i.getBoundingClientRect();
    return {alt: i.alt, ok: i.complete && i.naturalWidth > 0, x: r.left + window.scrollX,
            y: r.top + window.scrollY, w: r.width, h: r.height};
  });
  var out = document.createElement("pre");
  out.id = "__first_hour_layout";
  out.textContent = JSON.stringify({images: imgs, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def layout(index: Path, tmp: Path, window: str) -> dict:
    """Where each image of ``index`` lies on the page (CSS px) and the page's height, in a window the size of
    the screenshot's."""
    from .test_report_browser import chromium

    probed = index.with_name("__layout_" + index.name)
    probed.write_text(index.read_text(encoding="utf-8").replace("<head>", "<head>" + LAYOUT_PROBE, 1))
    try:
        res = chromium(probed, tmp / "profile-layout", f"--window-size={window}", "--hide-scrollbars",
                       "--dump-dom", "--virtual-time-budget=5000")  # fmt: skip
    finally:
        probed.unlink()
    m = re.search(r'<pre id="__first_hour_layout">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the layout probe did not report (rc={res.returncode}): {res.stderr[-2000:]}"
    text = m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    return json.loads(text)


# (y, x) metric of the plots that are not panels of metrics against guidance scale, by title
PLOT_AXES = {"CLIP score vs FID": ("clip_score", "fid"), "Precision vs recall": ("precision", "recall"),
             "KID against sampling cost": ("kid_mean", None)}  # fmt: skip


def intervals(shown: pd.DataFrame, model: str, col: str) -> int:
    """How many of ``model``'s rows of the report's plotted results have a (non-empty) interval of ``col``."""
    if f"{col}_lo" not in shown.columns or f"{col}_hi" not in shown.columns:
        return 0
    sub = shown[shown["model"] == model]
    lo, hi = (pd.to_numeric(sub[f"{col}_{e}"], errors="coerce") for e in ("lo", "hi"))
    return int(((hi - lo) > 0).sum())


METRIC_PLOTS = ("fig6-clip-score-vs-fid.png", "fig6-precision-vs-recall.png", "metrics-vs-scale.png",
                "kid-vs-evals.png")  # fmt: skip


def drawn_figures(first_hour: dict, out: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The figures the console's report drew: the same runs re-rendered in-process with every figure recorded
    (legend labels, curves, colours, interval bars); the metric plots' PNGs are checked to be byte for byte the
    console report's, so the records describe what its page shows."""
    from glidebench.report import render_report

    figs = spy_figures(monkeypatch)
    render_report(list(first_hour["runs"].values()), out)
    for name in METRIC_PLOTS:
        assert (out / name).read_bytes() == (first_hour["report"] / name).read_bytes(), name
    assert len(figs) == 4, [f["title"] for f in figs]  # 2 Pareto plots (no IS offline), vs scale, cost
    return figs


def model_curves(fig: dict, ax: dict) -> dict[str, list[dict]]:
    """The curves of ``ax`` per model (the folder's images, of unknown cost, are not on the cost plot)."""
    cost = fig["title"].startswith("KID against sampling cost")
    expected = [m for m in MODELS.values() if not (cost and m == MODELS["folder"])]
    return {m: [c for c in ax["curves"] if f"({m})" in c["label"] or c["label"].startswith(m + ",")]
            for m in expected}  # fmt: skip


@pytest.mark.slow
def test_a_model_keeps_its_colour_across_the_reports_figures(
    first_hour: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    colours: dict[str, set[str]] = {}
    for fig in drawn_figures(first_hour, tmp_path / "report-again", monkeypatch):
        for ax in fig["axes"]:
            for model, mine in model_curves(fig, ax).items():
                colours.setdefault(model, set()).update(c["colour"] for c in mine)
    assert all(len(c) == 1 for c in colours.values()), colours


@pytest.mark.slow
@pytest.mark.browser
def test_first_hour_report_in_headless_chromium(
    first_hour: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("chromium") is None or not Path("/usr/bin/chromium").exists():
        pytest.skip("headless Chromium not found (install: apt-get install -y chromium)")
    from glidebench.report.figstyle import METRICS
    from glidebench.report.tables import without_small_intervals

    from .test_report_browser import _near, chromium, probe

    report = first_hour["report"]
    index = report / "index.html"

    # Every metric plot: one legend entry and one colour per model, interval bars wherever there are intervals.
    figs = drawn_figures(first_hour, tmp_path / "report-again", monkeypatch)
    shown = without_small_intervals(pd.read_csv(report / "results.csv"))  # what the plots draw
    column = {label: col for col, label in METRICS}
    scale_colours: dict[str, str] = {}
    for fig in figs:
        colours: dict[str, str] = {}
        for ax in fig["axes"]:
            curves = model_curves(fig, ax)
            for model, mine in curves.items():
                assert len(mine) == 1, (fig["title"], ax["title"], model, [c["label"] for c in ax["curves"]])
                assert colours.setdefault(model, mine[0]["colour"]) == mine[0]["colour"], (ax["title"], model)
            col = column.get(ax["title"])
            if col is not None:  # a panel of metrics against guidance scale: a bar per point with an interval
                for model, (curve,) in curves.items():
                    assert curve["ybars"] == intervals(shown, model, col), (ax["title"], model, curve)
                if col in ("fid", "kid_mean", "clip_score"):  # measured with an interval at any size
                    assert all(c[0]["ybars"] == 2 for c in curves.values()), ax["title"]
                continue
            # a Pareto plot or the cost plot: bars wherever the model's metric has intervals
            y, x = next(v for k, v in PLOT_AXES.items() if fig["title"].startswith(k))
            for model, (curve,) in curves.items():
                assert (curve["ybars"] > 0) == (intervals(shown, model, y) > 0), (fig["title"], model, curve)
                if x is not None:
                    assert (curve["xbars"] > 0) == (intervals(shown, model, x) > 0), (fig["title"], model)
            if y in ("clip_score", "kid_mean"):
                assert all(c[0]["ybars"] > 0 for c in curves.values()), fig["title"]
        for model in MODELS.values():  # one legend entry per model drawn
            n = sum(lab == model or lab.startswith(model + ",") for lab in fig["labels"])
            assert n == (model in colours), (fig["title"], model, fig["labels"])
        assert len(set(colours.values())) == len(colours), (fig["title"], colours)
        if fig["title"].startswith("Metrics against guidance scale") or "(lower is better)" in fig["title"]:
            scale_colours = colours  # the plot the screenshot is checked on below
    assert len(scale_colours) == len(MODELS), scale_colours

    # The page: every image decoded, no error, no horizontal scrolling.
    seen, console_lines = probe(index, tmp_path, "--window-size=1280,2000")
    assert seen["broken"] == [] and seen["errors"] == [] and console_lines == [], seen
    assert seen["scrollWidth"] <= seen["innerWidth"] == 1280, seen

    # The screenshot: the whole page; each model's colour on the plot of metrics against guidance scale.
    where = layout(index, tmp_path, "1280,4000")
    height = min(int(where["height"]) + 10, 16000)
    window = f"1280,{height}"
    where = layout(index, tmp_path, window)  # the layout in the screenshot's window
    shot = tmp_path / "screenshot.png"
    res = chromium(index, tmp_path / "profile-shot", f"--screenshot={shot}", f"--window-size={window}",
                   "--hide-scrollbars", "--virtual-time-budget=5000")  # fmt: skip
    assert shot.exists(), f"no screenshot (rc={res.returncode}): {res.stderr[-2000:]}"
    with Image.open(shot) as im:
        assert im.size == (1280, height), im.size
        px = np.asarray(im.convert("RGB"))
    assert px.astype(float).std() > 20  # not a blank page
    (plot,) = [i for i in where["images"] if i["alt"] == "Metrics against guidance scale"]
    assert plot["ok"] and plot["w"] > 300 and plot["h"] > 300, plot
    x0, y0 = int(plot["x"]), int(plot["y"])
    crop = px[y0 : y0 + int(plot["h"]), x0 : x0 + int(plot["w"])]
    # the crop is the plot: its pixels are those of the PNG beside the page that it links, scaled to the page
    html = index.read_text(encoding="utf-8")
    src = re.search(r'<img src="([^"]*)" alt="Metrics against guidance scale"', html)
    assert src and "data:image" not in html, "the plot of metrics against guidance scale is not a linked file"
    assert (report / src.group(1)).is_file(), src.group(1)
    with Image.open(report / src.group(1)) as im:
        linked = np.asarray(im.convert("RGB").resize((crop.shape[1], crop.shape[0])), float)
    assert np.abs(linked - crop).mean() < 12, np.abs(linked - crop).mean()
    for model, colour in scale_colours.items():
        assert _near(crop, colour) > 50, (model, colour, _near(crop, colour))
    keep = tmp_path / "first-hour-report.png"  # left in the test's tmp dir for a person to look at
    shutil.copyfile(shot, keep)
