"""A report over runs of different models (glidebench.report.compare): the grouped table, one curve per model
and guidance kind, the models-side-by-side grid, protocol warnings that name each difference, and the example
plug-in (examples/glide_sampler_plugin.py) giving the images of GLIDE run with the same sampler and steps."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glidebench.report import compare, render_report
from glidebench.report.figstyle import varying_fields
from glidebench.report.loading import RunData, load_run
from glidebench.spec import PROTOCOL_FIELDS, RunSpec, Setting

from .fixtures_report import CAPTIONS, spy_figures, tile_colour, write_run_dir
from .harness import base_args, harness_env, image_bytes

KINDS, SCALES = ("cfg", "clip"), (1.0, 2.0, 4.0)


def real_spec(model_label: str, **protocol) -> dict:
    """A spec.json as `glidebench run` writes it, for the fixture runs (8 images, 16 px)."""
    fields = dict(
        suite="coco-fid", suite_version=4, model="plugin", model_label=model_label,
        weights=(("generator", model_label),), data="embedded", split="test", data_id="ba63abc6315677f2",
        captions="one-per-image", num_samples=8, reference_size=12, seed=1000,
        settings=tuple(Setting(k, s) for k in KINDS for s in SCALES), sampler="ddim", steps="25", resolution=16,
        base_resolution=16, up_sampler="ddim", up_steps="fast27", upsample_temp=0.997, batch_size=4,
        dtype="fp32", device_type="cpu",
    )  # fmt: skip
    spec = RunSpec(**(fields | protocol))
    return spec.to_dict() | {"fingerprint": spec.fingerprint}


def model_run(
    root: Path, name: str, model: str, invert: bool = False, spec: dict | None = None, **kw
) -> Path:
    """A fixture run of ``model`` with a real spec.json; ``invert`` recolours its images (255 - colour), so a
    test can tell its tiles from another run's."""
    run = write_run_dir(root, name, model=model, kinds=KINDS, scales=SCALES, **kw)
    (run / "spec.json").write_text(json.dumps(spec or real_spec(model)))
    if invert:
        for p in (run / "images").rglob("*.png"):
            Image.fromarray(255 - np.asarray(Image.open(p).convert("RGB"))).save(p)
    return run


class _Table(HTMLParser):
    """The cells of the table with id ``table_id`` in a page (header row first)."""

    def __init__(self, html: str, table_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.table_id, self.rows, self._in, self._cell = table_id, [], False, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id") == self.table_id:
            self._in = True
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False
        elif self._in and tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def results_table(index: Path) -> pd.DataFrame:
    rows = _Table(index.read_text(encoding="utf-8"), "results-all").rows
    return pd.DataFrame(rows[1:], columns=rows[0])


@pytest.fixture
def figures_seen(monkeypatch) -> list[dict]:
    """Every figure the report draws (``fixtures_report.figure_record``)."""
    return spy_figures(monkeypatch)


def test_two_models_one_protocol(tmp_path: Path, figures_seen: list[dict]) -> None:
    xss = "<script>alert(1)</script> a red circle"
    caps = [xss, *CAPTIONS[1:]]
    a = model_run(tmp_path / "a", "glide-run", "glide-base", captions=caps)
    b = model_run(
        tmp_path / "b", "plugin-run", "plugin-ddim25", invert=True, captions=caps, samplers=(("plms", "50"),),
        fid_offset=2.0,
    )  # fmt: skip
    runs = [load_run(a, "glide-run"), load_run(b, "plugin-run")]
    assert compare.protocol_fingerprint(runs[0].spec) == compare.protocol_fingerprint(runs[1].spec)
    assert runs[0].spec["fingerprint"] != runs[1].spec["fingerprint"]  # different models, one protocol
    assert compare.protocol_differences(runs) == []

    out = tmp_path / "out"
    index = render_report([a, b], out)
    html, md = index.read_text(encoding="utf-8"), (out / "report.md").read_text(encoding="utf-8")
    assert 'id="protocol-warnings"' not in html and "not evaluated under one protocol" not in md

    # the results table: model first, rows by model, guidance, scale
    table = results_table(index)
    assert list(table.columns[:3]) == ["model", "run", "setting_id"]
    want = sorted(
        [("glide-base", k, s) for k in KINDS for s in SCALES]
        + [("plugin-ddim25", k, s) for k in KINDS for s in SCALES]
    )
    assert list(zip(table["model"], table["guidance"], table["scale"].astype(float))) == want
    assert "| model | run | setting\\_id |" in md

    # every Figure-6 plot and the metrics-vs-scale panel: one curve per (model, guidance kind); the legend
    # names each model once (its colour), then each guidance kind once (its marker and line style)
    figs = [f for f in figures_seen if not f["title"].startswith("KID against")]
    assert len(figs) == 4  # CLIP score vs FID, precision vs recall, FID vs IS, metrics vs scale
    for fig in figs:
        assert fig["labels"] == ["glide-base", "plugin-ddim25", "classifier-free", "CLIP guidance"], fig[
            "title"
        ]
        for ax in fig["axes"]:
            assert len(ax["curves"]) == 4, ax["title"]
            assert_colour_per_model_marker_per_kind(ax["curves"], ("glide-base", "plugin-ddim25"))

    # the side-by-side grid: each row holds run a's then run b's tile for every setting, in setting order
    grid = np.asarray(Image.open(out / "grid-models-side-by-side.png").convert("RGB"))
    settings = [(k, s) for k in KINDS for s in SCALES]  # the fixture's setting order = the grid's
    for i in range(8):
        expected = []
        for si, _ in enumerate(settings):
            c = tile_colour(si, i)
            expected += [c, tuple(255 - v for v in c)]
        assert _row_found(grid, expected), f"row {i}: tiles not side by side in setting order"
    assert "Models side by side" in html and "&lt;script&gt;alert(1)&lt;/script&gt; a red circle" in html
    assert "<script>alert" not in html


def assert_colour_per_model_marker_per_kind(curves: list[dict], models: tuple[str, ...]) -> None:
    """Each curve's colour is its model's (one colour per model, all different), its marker and line style
    its guidance kind's (the same for every model)."""
    colour: dict[str, str] = {}
    look: dict[str, tuple] = {}
    for c in curves:
        kind, model = c["label"].split(" (", 1)
        model = model.rstrip(")")
        assert model in models, c["label"]
        assert colour.setdefault(model, c["colour"]) == c["colour"], c["label"]
        assert look.setdefault(kind, (c["marker"], c["linestyle"])) == (c["marker"], c["linestyle"]), c[
            "label"
        ]
    assert len(set(colour.values())) == len(colour) == len(models)
    assert len(set(look.values())) == len(look)


def _row_found(grid: np.ndarray, expected: list[tuple[int, int, int]]) -> bool:
    """True when some pixel row of ``grid`` shows exactly the colours ``expected``, left to right (other
    pixels, background and text, ignored)."""
    wanted = {tuple(c) for c in expected}
    for y in range(grid.shape[0]):
        seq: list[tuple[int, int, int]] = []
        for px in map(tuple, grid[y]):
            if px in wanted and (not seq or seq[-1] != px):
                seq.append(px)
        if seq == expected:
            return True
    return False


def test_protocol_differences_are_each_named(tmp_path: Path) -> None:
    a = model_run(tmp_path, "glide-run", "glide-base")
    other_caps = [c.replace("small", "tiny") for c in CAPTIONS]  # 6 of 8 captions say "small"
    b_spec = real_spec("plugin-ddim25", resolution=32, base_resolution=32, num_samples=6)
    b = model_run(tmp_path, "plugin-run", "plugin-ddim25", spec=b_spec, size=32, captions=other_caps)
    diffs = compare.protocol_differences([load_run(a, "A"), load_run(b, "B")])
    assert [d.kind for d in diffs] == ["captions", "resolution", "samples"]
    text = {d.kind: d.text for d in diffs}
    assert "evaluation resolution 16 px in A; 32 px in B" in text["resolution"]
    assert "images per setting 8 in A; 6 in B" in text["samples"]
    n_small = sum("small" in c for c in CAPTIONS)
    assert f"differs at {n_small} of the 8 caption indices" in text["captions"]
    assert f"({n_small} captions, 0 seeds)" in text["captions"]

    out = tmp_path / "out"
    index = render_report([a, b], out)
    html, md = index.read_text(encoding="utf-8"), (out / "report.md").read_text(encoding="utf-8")
    assert html.index('id="protocol-warnings"') < html.index('id="overview"')
    box = html[html.index('id="protocol-warnings"') : html.index('id="overview"')]
    assert box.count("<li>") == 3
    assert md.index("not evaluated under one protocol") < md.index("## What was evaluated")
    assert md.count("> - Different ") == 3


def _rundata(label: str, spec: dict, prompts: list[dict] | None = None) -> RunData:
    prompts = (
        prompts if prompts is not None else [{"index": i, "caption": f"c{i}", "seed": i} for i in range(8)]
    )
    return RunData(Path(label), label, spec, {}, pd.DataFrame(), prompts)


@pytest.mark.parametrize(
    ("change", "kind", "words"),
    [
        (
            {"data_id": "0123456789abcdef"},
            "data",
            "data identity ba63abc6315677f2 in A; 0123456789abcdef in B",
        ),
        ({"reference_size": 300}, "data", "reference images 12 in A; 300 in B"),
        ({"split": "train"}, "data", "split test in A; train in B"),
        ({"inception": "fid-helper"}, "metrics", "Inception source auto in A; fid-helper in B"),
        ({"prc_k": 5}, "metrics", "precision/recall k 3 in A; 5 in B"),
        ({"kid_subset_size": 50}, "metrics", "KID subset size 1000 in A; 50 in B"),
        ({"samples_per_prompt": 4}, "samples", "images per caption 1 in A; 4 in B"),
        ({"bootstrap_resamples": 200}, "metrics", "bootstrap resamples 1000 in A; 200 in B"),
        ({"fid_resize": "clean"}, "metrics", "FID resize tf-bilinear in A; clean in B"),
        ({"suite_version": 3}, "suite", "suite version 4 in A; 3 in B"),
        ({"seed": 7}, "captions", "seed 1000 in A; 7 in B"),
        ({"caption_style": "short"}, "captions", "caption style exact in A; short in B"),
        ({"captions": "random"}, "captions", "caption selection one-per-image in A; random in B"),
        ({"settings": (Setting("cfg", 1.0), Setting("cfg", 3.0))}, "settings", "(shared: cfg-1)"),
    ],
)
def test_each_protocol_field_is_named(change: dict, kind: str, words: str) -> None:
    a, b = real_spec("m1"), real_spec("m2", **change)
    diffs = compare.protocol_differences([_rundata("A", a), _rundata("B", b)])
    assert [d.kind for d in diffs] == [kind], diffs
    assert words in diffs[0].text


def test_every_protocol_field_belongs_to_one_group() -> None:
    grouped = [f for kind, names in compare.GROUPS.items() if kind != "other" for f in names]
    assert sorted(grouped) == sorted(PROTOCOL_FIELDS), "group the new protocol field in compare.GROUPS"
    assert compare.GROUPS["other"] == ()


def test_same_model_runs_keep_the_per_run_report(tmp_path: Path, figures_seen: list[dict]) -> None:
    a = model_run(tmp_path / "a", "ddim", "glide-base")
    b = model_run(tmp_path / "b", "plms", "glide-base", samplers=(("plms", "50"),))
    index = render_report([a, b], tmp_path / "out")
    assert results_table(index).columns[0] == "run"
    assert not (tmp_path / "out" / "grid-models-side-by-side.png").exists()
    assert {lab for f in figures_seen for lab in f["labels"]} == {
        "ddim", "plms", "classifier-free", "CLIP guidance"
    }  # fmt: skip


def test_legend_names_the_run_too_when_two_runs_share_a_model() -> None:
    df = pd.DataFrame({"run": ["r1", "r2", "r3"], "model": ["m", "m", "n"], "guidance": ["cfg"] * 3})
    assert varying_fields(df) == ["model", "run"]
    assert varying_fields(df.assign(model=["m", "n", "o"])) == ["model"]


def test_runs_without_a_readable_spec(tmp_path: Path) -> None:
    a = write_run_dir(tmp_path / "a", "run")  # a hand-written spec.json: nothing to compare, nothing said
    b = write_run_dir(tmp_path / "b", "run", model="other")
    assert compare.protocol_differences([load_run(a, "A"), load_run(b, "B")]) == []
    c = write_run_dir(tmp_path / "c", "run", omit=("spec.json",))
    diffs = compare.protocol_differences([load_run(a, "A"), load_run(c, "C")])
    assert [d.kind for d in diffs] == ["unknown"] and "No spec.json in C" in diffs[0].text


def test_example_plugin_gives_the_images_of_glide_with_its_sampler(
    monkeypatch, tmp_path, tiny_models_dir
) -> None:
    from glidebench.cli import main

    from .harness import only_run_dir

    harness_env(monkeypatch, tiny_models_dir, tmp_path / "cache")
    glide_out, plugin_out = tmp_path / "glide", tmp_path / "plugin"
    assert main(base_args(glide_out, "--sampler", "ddim", "--steps", "5")) == 0
    plugin = ["--generator", "examples.glide_sampler_plugin:make", "--generator-args", "sampler=ddim,steps=5"]
    argv = base_args(plugin_out, *plugin)
    i = argv.index("--steps")
    assert (
        main(argv[:i] + argv[i + 2 :]) == 0
    )  # GLIDE's --steps is refused with a plug-in that does not read it
    glide_run, plugin_run = only_run_dir(glide_out), only_run_dir(plugin_out)
    spec = json.loads((plugin_run / "spec.json").read_text())
    assert spec["model"] == "plugin" and spec["model_label"].endswith("-ddim5")
    assert spec["weights"]["sampler"] == "ddim" and spec["weights"]["steps"] == "5"
    glide_spec = json.loads((glide_run / "spec.json").read_text())
    assert {k: v for k, v in spec["weights"].items() if k in glide_spec["weights"]} == glide_spec["weights"]
    assert sorted(s["guidance"] for s in spec["settings"]) == sorted(
        s["guidance"] for s in glide_spec["settings"]
    )
    got, want = image_bytes(plugin_run), image_bytes(glide_run)
    assert len(want) >= 8 * len(glide_spec["settings"]) and got == want  # 8 captions (+ diversity images)
    # one protocol: the report compares them with no warning
    a, b = load_run(glide_run, "glide"), load_run(plugin_run, "plugin")
    assert compare.protocol_differences([a, b]) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"sampler": "euler"}, "sampler='euler': choose one of"),
        ({"steps": "ddim0"}, "steps='ddim0'"),
        ({"caption_style": "long"}, "caption_style='long'"),
    ],
)
def test_example_plugin_refuses_bad_arguments(monkeypatch, tmp_path, tiny_models_dir, args, message) -> None:
    from examples.glide_sampler_plugin import make
    from glidebench.generators import GeneratorError

    harness_env(monkeypatch, tiny_models_dir, tmp_path / "cache")
    with pytest.raises(GeneratorError, match=message.replace("(", r"\(")):
        make(**args)
