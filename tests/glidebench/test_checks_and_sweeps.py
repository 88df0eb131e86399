"""`glidebench check` (evaluator retrieval, inpainting, upsampler), the nfe suite and the attributes suite's columns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from glidebench.cli import main
from glidebench.data.embedded import BACKGROUNDS, COLOURS, EmbeddedCaptionSet, single_object
from glidebench.suites import SuiteError, checks
from glidebench.suites import nfe as N
from tests.glidebench.harness import build_tiny_models, harness_env

RECORDS = EmbeddedCaptionSet().eval_split("test", 300)


class _LookupEmbedder:
    """Embeds an image by looking its pixels up in a table of the records' renders."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        captions = sorted({r.caption for r in RECORDS})
        self.dim = len(captions)
        self.col = {c: i for i, c in enumerate(captions)}
        size = EmbeddedCaptionSet().size
        from glidebench.data.embedded import render

        self.by_pixels = {
            hashlib.sha256(render(r.scene, size).tobytes()).hexdigest(): r.caption for r in RECORDS
        }

    def _onehot(self, caption: str) -> np.ndarray:
        v = np.zeros(self.dim)
        v[self.col[caption]] = 1.0
        return v

    def embed_texts(self, texts):
        if self.mode == "constant":
            return np.ones((len(texts), self.dim))
        return np.stack([self._onehot(t) for t in texts])

    def embed_images(self, images):
        out = []
        for img in images.permute(0, 2, 3, 1).numpy():
            caption = self.by_pixels[hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()]
            if self.mode == "oracle":
                out.append(self._onehot(caption))
            elif self.mode == "random":
                seed = int(hashlib.sha256(caption.encode()).hexdigest()[:8], 16)
                out.append(np.random.default_rng(seed).normal(size=self.dim))
            else:
                out.append(np.ones(self.dim))
        return np.stack(out)


def test_retrieval_oracle_scores_one_and_uninformative_embedders_do_not() -> None:
    assert checks.retrieval_accuracy(_LookupEmbedder("oracle"), RECORDS, k=10)["retrieval_top1"] == 1.0
    # ignoring the input ties every candidate: a miss, never a free hit for the true caption listed first
    assert checks.retrieval_accuracy(_LookupEmbedder("constant"), RECORDS, k=10)["retrieval_top1"] == 0.0
    # a random direction per image picks the true caption about 1 time in k
    acc = checks.retrieval_accuracy(_LookupEmbedder("random"), RECORDS, k=10, seed=1)["retrieval_top1"]
    assert 0.03 <= acc <= 0.2, acc
    with pytest.raises(ValueError, match="k must be >= 2"):
        checks.retrieval_accuracy(_LookupEmbedder("oracle"), RECORDS, k=1)


def test_box_mask_erases_the_object_box_with_margin() -> None:
    scene = single_object(RECORDS)[0].scene
    m = checks.box_mask(scene, 32, margin=1)
    x0, y0, x1, y1 = scene.objects[0].box()
    ys, xs = torch.nonzero(m[0] == 0, as_tuple=True)
    assert m.shape == (1, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert (
        xs.min() == max(int(np.floor(x0 * 32)) - 1, 0) and xs.max() == min(int(np.ceil(x1 * 32)) + 1, 32) - 1
    )
    assert (
        ys.min() == max(int(np.floor(y0 * 32)) - 1, 0) and ys.max() == min(int(np.ceil(y1 * 32)) + 1, 32) - 1
    )
    # the erased area is exactly the rectangle
    assert (m[0] == 0).sum() == (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)


def test_edited_scene_changes_colour_and_shape_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(0)
    for rec in single_object(RECORDS)[:50]:
        new = checks.edited_scene(rec.scene, rng)
        a, b = rec.scene.objects[0], new.objects[0]
        assert b.colour != a.colour and b.shape != a.shape
        assert (b.size, b.cx, b.cy, b.extent) == (a.size, a.cx, a.cy, a.extent)
        assert COLOURS[b.colour] != BACKGROUNDS[new.background] and new.background == rec.scene.background
        assert b.colour in new.caption and b.shape in new.caption


def test_inpaint_check_keeps_known_pixels_exactly(tmp_path: Path) -> None:
    from glide.checkpoints import load_model
    from glide.pipeline import GlidePipeline

    d = build_tiny_models(tmp_path / "m", roles=("inpaint",))
    pipe = GlidePipeline(load_model(str(d / "embedded-inpaint.safetensors")))
    recs = single_object(RECORDS)[:4]
    out = checks.inpaint_check(pipe, recs, steps="4", batch=2, progress=False)
    assert out["n"] == 4 and out["images"].shape == (4, 3, 8, 8)  # the tiny model is 8 px
    # the sampler replaces the known region at every step and the last step returns pred_xstart there
    assert out["kept_region_max_abs_diff"] == 0
    assert 0 < out["hole_fraction_mean"] < 1
    assert 0.0 <= out["requested_colour_acc"] <= 1.0


class _FakeUpsamplerPipeline:
    """Stands in for GlidePipeline in the upsampler check: returns the true render (``oracle``) or the bilinear
    upsampling of its input, so the check's numbers have closed-form answers."""

    def __init__(self, mode: str, low: int = 32, size: int = 64) -> None:
        from types import SimpleNamespace

        self.mode = mode
        self.base = SimpleNamespace(config=SimpleNamespace(image_size=low))
        self.upsampler = SimpleNamespace(config=SimpleNamespace(image_size=size))
        self.truth = {}

    def upsample(self, low_res, prompts, seeds, **kwargs):
        size = self.upsampler.config.image_size
        if self.mode == "bilinear":
            return torch.nn.functional.interpolate(
                low_res, (size, size), mode="bilinear", align_corners=False
            )
        return torch.stack([self.truth[p] for p in prompts])


def test_upsample_check_closed_form_cases() -> None:
    from glidebench.data.embedded import render

    recs = [r for r in RECORDS if r.caption not in {q.caption for q in RECORDS if q is not r}][:6]
    oracle = _FakeUpsamplerPipeline("oracle")
    for r in recs:  # the true 64-px render is the embedded set's native render
        oracle.truth[r.caption] = torch.from_numpy(render(r.scene, 64)).permute(2, 0, 1).float() / 127.5 - 1
    out = checks.upsample_check(oracle, recs, batch=4, progress=False)
    assert out["n"] == 6 and out["resolution"] == "32 -> 64" and out["images"].shape == (3, 6, 3, 64, 64)
    assert out["rmse_grey_levels"] == 0.0
    # anti-aliased shape edges are what bilinear upsampling cannot restore, so it has a real error ...
    assert out["bilinear_rmse_grey_levels"] > 1.0 and out["beats_bilinear_fraction"] == 1.0
    # ... and the true render, box-downsampled, differs from the 8-bit low-res input by rounding alone
    assert 0.0 < out["low_res_consistency_rmse_grey_levels"] <= 0.5
    bil = checks.upsample_check(_FakeUpsamplerPipeline("bilinear"), recs, batch=4, progress=False)
    assert bil["rmse_grey_levels"] == pytest.approx(out["bilinear_rmse_grey_levels"], abs=1e-9)
    assert bil["beats_bilinear_fraction"] == 0.0  # equal is not better
    with pytest.raises(ValueError, match="not a multiple"):
        checks.upsample_check(_FakeUpsamplerPipeline("bilinear", low=24), recs, progress=False)


def test_upsample_check_runs_a_real_tiny_upsampler(tmp_path: Path) -> None:
    from glide.checkpoints import load_model
    from glide.pipeline import GlidePipeline

    d = build_tiny_models(tmp_path / "m", roles=("base", "upsample"))
    pipe = GlidePipeline(load_model(str(d / "embedded-base.safetensors")),
                         upsampler=load_model(str(d / "embedded-upsample.safetensors")))  # fmt: skip
    out = checks.upsample_check(pipe, RECORDS[:3], steps="3", batch=2, progress=False)
    assert out["resolution"] == "8 -> 16" and out["images"].dtype == torch.uint8
    assert out["images"].shape == (3, 3, 3, 16, 16)
    assert np.isfinite(out["rmse_grey_levels"]) and out["rmse_grey_levels"] > 0


def test_check_command_writes_results_and_fails_cleanly_without_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    harness_env(monkeypatch, tmp_path / "empty", tmp_path / "cache")
    assert main(["check", "--out", str(tmp_path / "o")]) == 1
    assert "lacks ['eval-clip', 'inpaint', 'base', 'upsample']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    models = build_tiny_models(tmp_path / "models")
    monkeypatch.setenv("GLIDEBENCH_MODELS", str(models))
    argv = ["check", "--num-retrieval", "20", "--num-inpaint", "3", "--num-upsample", "2"]
    argv += ["--out", str(tmp_path / "o")]
    assert main(argv) == 0
    (result,) = (tmp_path / "o" / "checks").glob("*/checks.json")
    data = json.loads(result.read_text())
    assert data["retrieval"]["n"] == 20 and data["inpaint"]["kept_region_max_abs_diff"] == 0
    assert data["upsample"]["n"] == 2 and data["upsample"]["resolution"] == "8 -> 16"
    assert (result.parent / "upsample-examples.png").is_file()
    assert "retrieval_short_evaluator" not in data  # no short-caption evaluator in this family
    # with one, its retrieval of the exact captions is reported beside the evaluator's (same images, same draw)
    import shutil

    shutil.copy(models / "embedded-clip-eval.safetensors", models / "embedded-clip-eval-short.safetensors")
    assert main(argv) == 0
    data = json.loads(
        max((tmp_path / "o" / "checks").glob("*/checks.json"), key=lambda p: p.stat().st_mtime).read_text()
    )
    assert data["retrieval_short_evaluator"] == data["retrieval"]  # a copy of the same weights
    assert data["models"]["eval-clip-short"] == data["models"]["eval-clip"]


# ---------------------------------------------------------------------------------------------------- nfe
def _frame(rows):
    return pd.DataFrame(
        rows, columns=["setting_id", "sampler", "steps", "kid_mean", "clip_score", "evals_per_image"]
    )


def test_relative_to_reference_by_hand() -> None:
    df = _frame(
        [
            ["cfg3", "ancestral", "250", 0.020, 20.0, 500],
            ["cfg3", "dpm++2m", "12", 0.021, 19.0, 24],  # +5% KID, -5% CLIP: within
            ["cfg3", "ddim", "12", 0.030, 20.0, 24],  # +50% KID: outside
            ["cfg3", "plms", "12", 0.010, 17.0, 25],  # better KID, -15% CLIP: outside
        ]
    )
    out = N.relative_to_reference(df, ("ancestral", "250"))
    assert out["kid_vs_ref"].round(6).tolist() == [0.0, 0.05, 0.5, -0.5]
    assert out["clip_vs_ref"].round(6).tolist() == [0.0, -0.05, 0.0, -0.15]
    assert out["within_tol"].tolist() == [True, True, False, False]
    with pytest.raises(SuiteError, match="reference entry"):
        N.relative_to_reference(df, ("ancestral", "100"))


def test_parse_sweep_names_bad_entries() -> None:
    sweep = N.parse_sweep([["ddim", 25], ["dpm++2m", "12"], ["dpm++2m", "12", "100,700"]], "x")
    assert sweep == [("ddim", "25", ""), ("dpm++2m", "12", ""), ("dpm++2m", "12", "100-700")]
    assert N.entry_name(sweep[2]) == "dpm++2m 12, guidance at t 100-700"
    for bad, msg in (([], "non-empty"), ([["ddim"]], "not a"), ([["euler", "5"]], "sampler must be"),
                     ([["ddim", "5"], ["ddim", "5"]], "twice"), ([["ddim", "5", "9,1"]], "0 <= lo <= hi"),
                     ([["ddim", "5", "1,2"], ["ddim", "5", "1-2"]], "twice")):  # fmt: skip
        with pytest.raises(SuiteError, match=msg):
            N.parse_sweep(bad, "suite.json")


def test_shipped_suites_load() -> None:
    from glidebench.suites import load_suite

    s = load_suite("nfe")
    for data in ("embedded", "coco"):
        sweep = N.parse_sweep(s.options(data)["sweep"], data)
        assert (*s.options(data)["reference"], "") in sweep
    assert load_suite("attributes").options("embedded")["captions"] == "single-object"


def _tiny_suite_dir(tmp_path: Path) -> Path:
    from glidebench.suites import suites_dir

    d = tmp_path / "suites"
    d.mkdir()
    for name in ("coco-fid", "attributes"):
        (d / f"{name}.json").write_text((suites_dir() / f"{name}.json").read_text())
    spec = json.loads((suites_dir() / "nfe.json").read_text())
    spec["profiles"]["embedded"] |= {
        "sweep": [["ancestral", "8"], ["ddim", "4"], ["dpm++2m", "4"], ["ddim", "4", "10,40"]],
        "reference": ["ancestral", "8"],
        "num_samples": 6, "reference_size": 10, "batch_size": 3,
    }  # fmt: skip
    (d / "nfe.json").write_text(json.dumps(spec))
    return d


def test_nfe_suite_end_to_end_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import glidebench.suites as S

    harness_env(monkeypatch, build_tiny_models(tmp_path / "models"), tmp_path / "cache")
    suites = _tiny_suite_dir(tmp_path)
    monkeypatch.setattr(S, "suites_dir", lambda: suites)
    out = tmp_path / "runs"
    args = ["run", "nfe", "--cfg", "3", "--out", str(out), "--quiet"]
    assert main([*args, "--steps", "5"]) == 1  # the sweep owns sampler and steps
    assert "does not apply to the nfe suite" in capsys.readouterr().err
    assert main(args) == 0
    (summary,) = (out / "nfe").glob("summary-*/summary.json")
    data = json.loads(summary.read_text())
    rows = {
        (r["sampler"], r["steps"]) + ((r["cfg_interval"],) if r["cfg_interval"] else ()): r
        for r in data["rows"]
    }
    assert set(rows) == {("ancestral", "8"), ("ddim", "4"), ("dpm++2m", "4"), ("ddim", "4", "10-40")}
    assert rows[("ancestral", "8")]["kid_vs_ref"] == 0.0
    # the jackknife error over the shared captions: none for the reference against itself, finite otherwise
    assert rows[("ancestral", "8")]["kid_vs_ref_se"] == 0.0
    assert all(0 < rows[e]["kid_vs_ref_se"] < float("inf") for e in [("ddim", "4"), ("dpm++2m", "4")])
    # both halves of a classifier-free batch count
    assert rows[("ddim", "4")]["evals_per_image"] == 8 and rows[("ancestral", "8")]["evals_per_image"] == 16
    # "4" of the tiny models' T = 50 keeps t = 0, 16, 33, 49: guidance at 10..40 doubles two of the four
    assert rows[("ddim", "4", "10-40")]["evals_per_image"] == 6
    assert rows[("ddim", "4", "10-40")]["kid_mean"] != rows[("ddim", "4")]["kid_mean"]
    md = (summary.parent / "summary.md").read_text()
    assert "| cfg_interval |" in md and "| 10-40 |" in md
    assert (summary.parent / "report" / "index.html").is_file()
    assert (summary.parent / "report" / "fid-vs-evals.png").is_file() or any(
        (summary.parent / "report").glob("*-vs-evals*.png")
    )
    runs = sorted(p for p in (out / "nfe").iterdir() if not p.name.startswith("summary-"))
    assert len(runs) == 4
    before = {p: p.stat().st_mtime_ns for r in runs for p in (r / "images").rglob("*.png")}
    assert main(args) == 0  # a rerun samples nothing again
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_nfe_suite_shards_do_their_part_of_every_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A shard whose peer still has images to make goes on to its chunks of the next entries (it used to stop
    after the first); the shard that finishes last computes every entry's metrics and the summary, equal to
    a one-process run's."""
    import glidebench.suites as S

    harness_env(monkeypatch, build_tiny_models(tmp_path / "models"), tmp_path / "cache")
    suites = _tiny_suite_dir(tmp_path)
    monkeypatch.setattr(S, "suites_dir", lambda: suites)
    args = ["run", "nfe", "--cfg", "3", "--quiet", "--no-report"]
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    assert main([*args, "--out", str(sharded), "--shard", "0/2"]) == 0
    assert "4 of 4 entries" in capsys.readouterr().out
    runs = sorted((sharded / "nfe").iterdir())
    assert len(runs) == 4 and not list((sharded / "nfe").glob("summary-*"))
    assert all(len(list((r / "images").rglob("*.png"))) == 3 for r in runs)  # chunk 0 of 2 (batch 3) each
    assert main([*args, "--out", str(sharded), "--shard", "1/2"]) == 0
    assert main([*args, "--out", str(single)]) == 0
    (a,), (b,) = (list((d / "nfe").glob("summary-*/summary.json")) for d in (sharded, single))
    rows_a, rows_b = (json.loads(p.read_text())["rows"] for p in (a, b))
    key = ("sampler", "steps", "cfg_interval", "kid_mean", "clip_score", "kid_vs_ref")
    assert [tuple(r[k] for k in key) for r in rows_a] == [tuple(r[k] for k in key) for r in rows_b]


def test_attributes_suite_adds_caption_agreement_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    harness_env(monkeypatch, build_tiny_models(tmp_path / "models"), tmp_path / "cache")
    out = tmp_path / "runs"
    args = ["run", "attributes", "--limit", "6", "--reference-size", "30", "--cfg", "1,3", "--clip", "",
            "--steps", "4", "--batch-size", "3", "--out", str(out), "--quiet", "--no-report"]  # fmt: skip
    assert main(args) == 0
    (run_dir,) = (out / "attributes").iterdir()
    prompts = json.loads((run_dir / "prompts.json").read_text())
    records = {r.index: r for r in EmbeddedCaptionSet().eval_split("test", 30)}
    assert all(records[int(p["source"].rsplit(":", 1)[1])].scene.n_objects == 1 for p in prompts)
    df = pd.read_csv(run_dir / "results.csv")
    for c in ("colour_acc", "shape_acc", "size_acc", "background_acc", "object_acc"):
        assert df[c].between(0, 1).all(), c
    assert df["n_single_object"].tolist() == [6, 6] and df["position_acc"].isna().all()
    assert "colour_acc" in (run_dir / "results.md").read_text()
    capsys.readouterr()
    # MS-COCO captions have no ground-truth attributes
    assert (
        main(["run", "coco-fid", "--captions", "single-object", "--coco-root", str(tmp_path), "--dry-run"])
        == 1
    )
    assert "single-object is for the embedded set" in capsys.readouterr().err
