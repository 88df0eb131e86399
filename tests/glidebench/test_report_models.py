"""A report of two models drawn and written for two models: 95 % intervals on every metric plot, the sampling-cost
plot naming each model by its own sampler, one "Read this first" box, attribute accuracies with their caption
counts (no interval below 10 captions), grid headings in full with one caption numbering, a compact main
table, and GLIDE's notes only for GLIDE runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from glidebench.report import compare, grids, render_report

from .fixtures_report import CAPTIONS, spy_figures, write_run_dir
from .test_report import Page

HASH = "cd" * 32


def glide_run(root: Path, **kw) -> Path:
    """A GLIDE run (hand-written spec) with intervals, 51 one-object and 12 multi-object captions."""
    kw = {"kinds": ("cfg", "clip"), "scales": (1.0, 2.0, 4.0), "intervals": True, "attributes": (51, 12)} | kw
    return write_run_dir(root, "glide-run", model="glide-base", unguided=True, **kw)


def plugin_run(root: Path, **kw) -> Path:
    """A run of another generator: spec ``model: plugin``, its own sampler in provenance.json's ``sampling``
    record (the results still say GLIDE's spec defaults, as older runs did), generator arguments recorded
    beside the checkpoint hashes, and only 2 multi-object captions."""
    kw = {"kinds": ("cfg", "clip"), "scales": (1.0, 2.0, 4.0), "intervals": True, "attributes": (51, 2)} | kw
    run = write_run_dir(
        root, "plugin-run", model="tiny-sd", samplers=(("dpm++2m-sde", "20"),), unguided=True, **kw
    )
    spec = json.loads((run / "spec.json").read_text())
    (run / "spec.json").write_text(json.dumps(spec | {"model": "plugin", "caption_style": "short"}))
    prov = json.loads((run / "provenance.json").read_text())
    prov["sampling"] = {
        "model": "tiny-sd",
        "sampler": "DDIMScheduler",
        "steps": "25",
        "text": "tiny-sd: DDIM",
    }
    prov["checkpoints"] = {
        "tiny-sd/unet": HASH, "tiny-sd/generator": "examples.diffusers_plugin:make",
        "tiny-sd/generator-args": '{"steps": 25}', "tiny-sd/sampler": "DDIMScheduler",
    }  # fmt: skip
    (run / "provenance.json").write_text(json.dumps(prov))
    return run


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report-models")
    mp = pytest.MonkeyPatch()
    drawn: list[str] = []
    real_text = ImageDraw.ImageDraw.text

    def text_spy(self, xy, text, *a, **k):
        drawn.append(str(text))
        return real_text(self, xy, text, *a, **k)

    try:
        figs = spy_figures(mp)
        mp.setattr(ImageDraw.ImageDraw, "text", text_spy)
        a = glide_run(root / "a", warnings="fewer than 2048 samples: FID is a smoke test")
        b = plugin_run(root / "b", warnings="fewer than 2048 samples: FID is a smoke test; only the plug-in")
        index = render_report([a, b], root / "out")
    finally:
        mp.undo()
    html = index.read_text(encoding="utf-8")
    md = (root / "out" / "report.md").read_text(encoding="utf-8")
    return {"a": a, "b": b, "out": root / "out", "html": html, "md": md, "page": Page(html), "figs": figs,
            "drawn": drawn}  # fmt: skip


def test_every_metric_plot_draws_the_intervals(two) -> None:
    titles = [f["title"] for f in two["figs"]]
    assert len(titles) == 5, titles  # 3 Pareto plots, metrics vs scale, KID vs model evaluations
    for fig in two["figs"]:
        for ax in fig["axes"]:
            guided = [c for c in ax["curves"] if not c["label"].startswith("unguided")]
            assert guided, (fig["title"], ax["title"])
            if "Inception score" in ax["title"]:
                continue  # the Inception score has no interval
            if ax["title"].startswith("position accuracy"):  # 12 captions in glide-run, 2 in plugin-run
                assert all(c["ybars"] == 3 for c in guided if "glide-base" in c["label"]), guided
                assert all(c["ybars"] == 0 for c in guided if "tiny-sd" in c["label"]), guided
                continue
            assert all(c["ybars"] > 0 for c in guided), (fig["title"], ax["title"], guided)
            pareto = fig["title"].endswith("(points labelled by guidance scale)")
            if pareto and ax["xlabel"] != "Inception score":
                assert all(c["xbars"] > 0 for c in guided), (fig["title"], guided)


def test_cost_plot_names_each_model_by_its_own_sampler(two) -> None:
    cost = next(f for f in two["figs"] if f["title"].startswith("KID against sampling cost"))
    assert "tiny-sd, DDIMScheduler" in cost["labels"] and "glide-base, ddim" in cost["labels"]
    assert not any("dpm++2m-sde" in lab for lab in cost["labels"])  # GLIDE's spec default, not its sampler
    curves = cost["axes"][0]["curves"]
    assert {c["colour"] for c in curves if "tiny-sd" in c["label"]} != {
        c["colour"] for c in curves if "glide-base" in c["label"]
    }
    assert all(c["ybars"] > 0 for c in curves)


def test_read_this_first_once_with_per_run_differences(two) -> None:
    html, md = two["html"], two["md"]
    assert html.count("Read this first") == 1 and md.count("Read this first") == 1
    box = html[html.index('id="read-first"') : html.index("</div>", html.index('id="read-first"'))]
    assert box.count("embedded toy set") == 1  # shared by both runs: said once
    assert box.count("Harness warning (all settings): fewer than 2048 samples") == 1
    assert "<li>Only in plugin-run: Harness warning (all settings): only the plug-in</li>" in box
    assert html.index('id="read-first"') < html.index('id="results"')


def test_accuracies_show_their_caption_counts(two) -> None:
    page, md = two["page"], two["md"]
    table = page.tables["attributes"]
    head = table[0]
    rows = {(r[head.index("model")], r[head.index("setting")]): r for r in table[1:]}
    glide, plugin = rows[("glide-base", "classifier-free 2")], rows[("tiny-sd", "classifier-free 2")]
    assert glide[head.index("position")] == "1.000 [0.950,\u00a01.050] (n=12)"
    assert plugin[head.index("position")] == "1.000 (n=2)"  # 2 captions: no interval
    assert re.fullmatch(r"0\.500 \[0\.475,\s0\.525\] \(n=51\)", glide[head.index("colour")])
    assert plugin[head.index("colour")].endswith("(n≤51)")  # short captions: an upper bound
    full = page.tables["results-all"]
    pos = full[0].index("position_acc")
    plugin_cells = [r[pos] for r in full[1:] if r[full[0].index("model")] == "tiny-sd"]
    assert plugin_cells and all(c == "1.000" for c in plugin_cells)
    results_md = md.split("## Results", 1)[1].split("## Plots", 1)[0]  # the full table
    md_rows = [
        line.strip("|").split("|") for line in results_md.splitlines() if line.startswith("| tiny-sd |")
    ]
    assert md_rows and all(r[pos].strip() == "1.000" for r in md_rows)
    assert "position accuracy counts the multi-object captions whose relations are judged (12 in glide-run; " \
           "2 in plugin-run)" in page.plain  # fmt: skip
    assert "fewer than 10 captions" in md
    summary = md.split("## Summary", 1)[1].split("## Results", 1)[0]
    assert "| tiny-sd | classifier-free 2 |" in summary and "1.000 (n=2)" in summary  # caption agreement
    # results.csv beside the report keeps every interval, unrounded
    csv = pd.read_csv(two["out"] / "results.csv")
    assert csv.loc[csv["run"] == "plugin-run", "position_acc_lo"].notna().all()


def test_accuracy_count_not_recorded_is_said(tmp_path) -> None:
    run = write_run_dir(tmp_path, "old", intervals=True, attributes=(30, 30))
    df = pd.read_csv(run / "results.csv").drop(columns=["n_single_object", "n_multi_object"])
    df.to_csv(run / "results.csv", index=False)
    page = Page(render_report([run], tmp_path / "out").read_text(encoding="utf-8"))
    table = page.tables["attributes"]
    assert "colour (n not recorded)" in table[0]  # one count for the whole column: in its header
    assert "one-object captions (not recorded)" in page.plain


def test_grid_headings_in_full_and_one_numbering(two) -> None:
    drawn = two["drawn"]
    assert not any("…" in t for t in drawn)
    joined = " ".join(drawn)
    for heading in ("classifier-free 1", "classifier-free 4", "CLIP guidance 2", "unguided"):
        words = heading.split()
        assert re.search(r"\s?".join(re.escape(w) for w in words), joined.replace("- ", "-")), heading
    page = two["page"]
    assert not page.elements("ol")  # the caption lists carry the grid's own row labels, no second numbering
    assert [str(i) for i in range(8)] == [t for t in drawn if t.isdigit()][:8]
    items = [t.strip() for t in page.plain.splitlines() if re.match(r"\s*\d+ a ", t)]
    assert items[:8] == [f"{i} {c}" for i, c in enumerate(CAPTIONS)]
    assert "- **0** a small red circle on a grey background" in two["md"]


def test_wrap_full_keeps_every_character() -> None:
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = grids._font(12)
    for text, width in (("classifier-free 3.0", 64), ("CLIP guidance 10", 40), ("embedded-short-ddim25", 30)):
        lines = grids.wrap_full(draw, text, font, width)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")
        assert all(draw.textlength(line, font=font) <= width for line in lines)


def test_side_by_side_group_heading_is_never_cut(tmp_path) -> None:
    tile = tmp_path / "t.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tile)
    seen: list[str] = []
    real = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *a, **k):
        seen.append(str(text))
        return real(self, xy, text, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ImageDraw.ImageDraw, "text", spy)
        compare.tile_side_by_side([[tile]], [("classifier-free 3.0", 1)], ["a-very-long-model-name"], ["0"])
    assert "classifier-free 3.0" in " ".join(seen).replace("- ", "-") or "classifier-free 3.0" in seen
    assert "".join(t for t in seen if t not in ("0",)).replace(" ", "").count("a-very-long-model-name") == 1


def test_compact_main_table_and_full_table_folded(two) -> None:
    page, html = two["page"], two["html"]
    main = page.tables["results"]
    assert main[0] == ["model", "setting", "samples", "FID", "KID", "IS", "precision", "recall", "CLIP score"]
    fid = main[1][3]
    assert re.fullmatch(r"\d+\.\d\d \[\d+\.\d\d,\u00a0\d+\.\d\d\]", fid)  # the bracket never breaks
    assert len(page.tables["results-all"][0]) > 20
    assert f"All {len(page.tables['results-all'][0])} columns, one row per setting" in page.plain
    assert html.index('<details id="all-columns">') < html.index('id="results-all"')


def test_glide_notes_only_for_glide_runs(two, tmp_path) -> None:
    html = two["html"]
    assert "GLIDE (filtered)" in html  # glide-run is a GLIDE run
    overview = two["page"].tables["overview"]
    ckpt = next(r for r in overview if r[0] == "Checkpoints (SHA-256)")
    gen = next(r for r in overview if r[0] == "Generator and its arguments")
    assert ckpt[2] == f"tiny-sd/unet: {HASH}"  # the plug-in run's one checkpoint, not its generator arguments
    assert "examples.diffusers_plugin:make" in gen[2] and "generator-args" in gen[2]
    checkpoint_tables = [t for t in two["page"].all_tables if t and t[0] == ["checkpoint", "sha256"]]
    assert all("generator" not in r[0] for t in checkpoint_tables for r in t)

    only = plugin_run(tmp_path / "p")
    page = Page(render_report([only], tmp_path / "out").read_text(encoding="utf-8"))
    assert "GLIDE (filtered)" not in page.plain and "Released notebooks" not in page.plain
    assert "another generator made these images" in page.plain
    assert "No checkpoint hashes" not in page.plain
    prov = json.loads((only / "provenance.json").read_text())
    prov["checkpoints"] = {k: v for k, v in prov["checkpoints"].items() if v != HASH}  # hashes no weights
    (only / "provenance.json").write_text(json.dumps(prov))
    page = Page(render_report([only], tmp_path / "out2").read_text(encoding="utf-8"))
    rows = {r[0]: r[1] for r in page.tables["overview"][1:]}
    assert (
        "Checkpoints (SHA-256)" not in rows
        and "generator: examples.diffusers_plugin:make" in rows["Generator and its arguments"]
    )
