"""End-to-end `glidebench run coco-fid` with tiny models: the run-directory contract, the numbers (checked against
independent computations from the files), the first line, and every bad input's message and exit code."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from glidebench.cli import main
from glidebench.runner.results import RESULT_COLUMNS

from .harness import (
    PixelFeatures,
    base_args,
    build_tiny_models,
    harness_env,
    image_bytes,
    only_run_dir,
)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fid_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance straight from the definition (scipy sqrtm), independent of torch-fidelity."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_run_writes_the_contract_and_correct_numbers(env: Path, capsys) -> None:
    out = env / "runs"
    assert main(base_args(out, "--clip", "2")) == 0
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0].startswith("glidebench coco-fid: no MS-COCO given")
    assert "EMBEDDED" in stdout.splitlines()[0] and "RANDOM" not in stdout.splitlines()[0]
    assert "(test split, short captions)" in stdout.splitlines()[0]  # the suite's default since version 4
    run = only_run_dir(out)
    spec = json.loads((run / "spec.json").read_text())
    assert spec["suite"] == "coco-fid" and spec["spec_version"] == 1 and len(spec["fingerprint"]) == 64
    assert run.name.endswith(spec["fingerprint"][:12])
    prompts = json.loads((run / "prompts.json").read_text())
    assert [p["index"] for p in prompts] == list(range(8))
    assert [p["seed"] for p in prompts] == list(range(8))
    assert all(p["source"].startswith("embedded:test:") for p in prompts)
    assert len({p["source"] for p in prompts}) == 8  # one caption per distinct image
    settings = json.loads((run / "settings.json").read_text())
    assert list(settings) == ["cfg-1", "cfg-3", "clip-2"]
    # the embedded profile's sampler; the steps come from base_args
    assert settings["cfg-3"] == {
        "guidance": "cfg", "scale": 3.0, "sampler": "dpm++2m-sde", "steps": "ddim5", "resolution": 8,
        "model": "embedded", "up_sampler": None, "up_steps": None,
    }  # fmt: skip
    for sid in settings:
        files = sorted((run / "images" / sid).glob("*.png"))
        assert [f.name for f in files] == [f"{i:06d}.png" for i in range(8)]
    rows = _read_csv(run / "results.csv")
    assert list(rows[0])[: len(RESULT_COLUMNS)] == list(RESULT_COLUMNS)
    by_id = {r["setting_id"]: r for r in rows}
    assert set(by_id) == set(settings)
    # Model evaluations per image: DDIM 5 steps; classifier-free scale 3 runs both halves; scale 1 one.
    assert float(by_id["cfg-1"]["evals_per_image"]) == 5
    assert float(by_id["cfg-3"]["evals_per_image"]) == 10
    assert float(by_id["clip-2"]["evals_per_image"]) == 5
    assert all(float(r["n_samples"]) == 8 for r in rows)
    assert all(float(r["wall_s"]) > 0 and float(r["images_per_s"]) > 0 for r in rows)
    assert "FID from 8 < 2048 samples" in by_id["cfg-1"]["warnings"]

    # Independent recomputation of FID / precision from the PNG files and freshly rendered references.
    from glidebench.data.embedded import EmbeddedCaptionSet, render
    from glidebench.metrics import clip_score

    refs = EmbeddedCaptionSet().eval_split("test", 12)
    ref_imgs = np.stack([render(r.scene, 64) for r in refs]).astype(np.float64)
    ref_imgs = np.round(ref_imgs.reshape(12, 8, 8, 8, 8, 3).mean(axis=(2, 4))).astype(np.uint8)
    ext = PixelFeatures()
    ref_f = ext(torch.from_numpy(ref_imgs).permute(0, 3, 1, 2))["pool3"].astype(np.float64)
    from PIL import Image

    gen = np.stack([np.asarray(Image.open(run / "images" / "cfg-3" / f"{i:06d}.png")) for i in range(8)])
    gen_f = ext(torch.from_numpy(gen).permute(0, 3, 1, 2))["pool3"].astype(np.float64)
    assert float(by_id["cfg-3"]["fid"]) == pytest.approx(_fid_numpy(gen_f, ref_f), rel=1e-4, abs=1e-6)
    assert 0.0 <= float(by_id["cfg-3"]["precision"]) <= 1.0 and 0.0 <= float(by_id["cfg-3"]["recall"]) <= 1.0
    # CLIP score = 100 x mean cosine with the evaluator CLIP, recomputed here.
    from glidebench import models as M

    plan = M.plan_models("embedded", None, False)
    emb, _ = M.load_eval_clip(plan, "cpu")
    cs = clip_score(
        emb.embed_images(torch.from_numpy(gen).permute(0, 3, 1, 2)),
        emb.embed_texts([p["caption"] for p in prompts]),
    )
    assert float(by_id["cfg-3"]["clip_score"]) == pytest.approx(cs["clip_score"], rel=1e-5)

    prov = json.loads((run / "provenance.json").read_text())
    for key in ("git_commit", "versions", "device", "started", "finished", "duration_s", "checkpoints", "data",
                "feature_extractor"):  # fmt: skip
        assert key in prov
    assert prov["checkpoints"]["embedded/base"] == spec["weights"]["base"]
    assert prov["data"]["captions"] == "one-per-image" and prov["data"]["seed"] == 0
    assert prov["feature_extractor"]["inception"] == "test-pixels"
    results_json = json.loads((run / "results.json").read_text())
    assert [r["setting_id"] for r in results_json] == [r["setting_id"] for r in rows]
    # the results table's rows (the paired differences follow it)
    assert (run / "results.md").read_text().split("Paired differences")[0].count("| cfg-") == 2


def test_random_fallback_says_so_first_and_in_the_results(monkeypatch, tmp_path: Path, capsys) -> None:
    harness_env(monkeypatch, tmp_path / "empty", tmp_path / "cache")
    out = tmp_path / "runs"
    assert main(base_args(out, "--limit", "4", "--steps", "ddim2", "--cfg", "2")) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "RANDOM-INITIALISED" in first
    run = only_run_dir(out)
    assert run.name.startswith("embedded-random-init-embedded-32px-")
    row = _read_csv(run / "results.csv")[0]
    assert row["model"] == "embedded-random-init" and "RANDOM-INITIALISED" in row["warnings"]
    assert "CLIP score skipped" in row["warnings"] and row["clip_score"] == ""
    assert json.loads((run / "spec.json").read_text())["random_init"] is True


def test_changed_spec_gets_a_new_run_dir_and_same_spec_reuses_it(env: Path) -> None:
    out = env / "runs"
    assert main(base_args(out, "--limit", "4", "--cfg", "1")) == 0
    assert main(base_args(out, "--limit", "4", "--cfg", "1")) == 0
    assert len(list((out / "coco-fid").iterdir())) == 1
    assert main(base_args(out, "--limit", "4", "--cfg", "1", "--seed", "1")) == 0
    assert len(list((out / "coco-fid").iterdir())) == 2


def test_images_do_not_depend_on_settings_order_or_other_settings(env: Path) -> None:
    a, b = env / "a", env / "b"
    assert main(base_args(a, "--cfg", "3", "--clip", "")) == 0
    assert main(base_args(b, "--cfg", "1,3")) == 0
    ia, ib = image_bytes(only_run_dir(a)), image_bytes(only_run_dir(b))
    assert {k: v for k, v in ib.items() if k.startswith("images/cfg-3")} == ia
    assert ib["images/cfg-1/000000.png"] != ib["images/cfg-3/000000.png"]  # guidance changes the samples


def test_upsampled_resolution(env: Path) -> None:
    out = env / "runs"
    assert (
        main(
            base_args(
                out, "--limit", "4", "--cfg", "2", "--clip", "", "--resolution", "up", "--up-steps", "ddim3"
            )
        )
        == 0
    )
    run = only_run_dir(out)
    from PIL import Image

    assert Image.open(run / "images" / "cfg-2" / "000000.png").size == (16, 16)
    row = _read_csv(run / "results.csv")[0]
    assert float(row["evals_per_image"]) == 2 * 5 + 3 and row["resolution"] == "16"


def test_paper_preset_resolves_as_documented(env: Path, monkeypatch, capsys) -> None:
    # the shipped embedded models (1000 diffusion steps; the tiny test models' 50 cannot take 250 steps)
    monkeypatch.delenv("GLIDEBENCH_MODELS")
    out = env / "runs"
    assert (
        main(["run", "coco-fid", "--preset", "paper", "--captions", "random", "--dry-run", "--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    spec = json.loads(text[text.index("{") :])
    assert (spec["num_samples"], spec["sampler"], spec["steps"]) == (30000, "ancestral", "250")
    assert (spec["up_sampler"], spec["up_steps"], spec["upsample_temp"]) == ("ddim", "fast27", 0.997)
    assert spec["resolution"] == 64 and spec["base_resolution"] == 32  # "up": the embedded upsampler's size
    assert [(s["guidance"], s["scale"]) for s in spec["settings"]] == [
        ("cfg", 1.0), ("cfg", 1.5), ("cfg", 2.0), ("cfg", 3.0), ("cfg", 4.0), ("clip", 1.0), ("clip", 2.0), ("clip", 3.0)
    ]  # fmt: skip
    assert not out.exists()  # a dry run writes nothing


def test_ls_lists_suites_models_and_runs(env: Path, capsys) -> None:
    out = env / "runs"
    assert main(base_args(out, "--limit", "4", "--cfg", "1")) == 0
    capsys.readouterr()
    assert main(["ls", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "coco-fid (version 5" in text and "paper" in text
    assert "embedded  base" in text and "trained" in text
    assert "finished" in text and str(only_run_dir(out)) in text


# ----------------------------------------------------------------------------------------------------------
# Bad input: a clear message, exit code != 0, no result files


def test_unknown_option_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["run", "coco-fid", "--no-such-option"])
    assert e.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["run", "no-such-suite"])
    assert e.value.code == 2


def _assert_failed_cleanly(out: Path, code: int, err: str, *patterns: str) -> None:
    assert code == 1
    assert err.startswith("glidebench: error: ")
    for p in patterns:
        assert p in err, (p, err)
    assert not list(out.rglob("results.csv")) and not list(out.rglob("results.json"))
    assert not list(out.rglob("provenance.json"))


def test_nan_samples_fail_cleanly(monkeypatch, tmp_path: Path, capsys) -> None:
    models = build_tiny_models(tmp_path / "nan", roles=("base",), nan_base=True)
    harness_env(monkeypatch, models, tmp_path / "cache")
    out = tmp_path / "runs"
    code = main(base_args(out))
    _assert_failed_cleanly(out, code, capsys.readouterr().err, "NaN", "cfg-1", "no results were produced")
    assert not list(out.rglob("*.png"))


def test_corrupt_checkpoint_fails_cleanly(monkeypatch, tmp_path: Path, tiny_models_dir: Path, capsys) -> None:
    d = tmp_path / "models"
    shutil.copytree(tiny_models_dir, d)
    p = d / "embedded-base.safetensors"
    p.write_bytes(b"\0" * 100 + p.read_bytes()[100:])
    harness_env(monkeypatch, d, tmp_path / "cache")
    out = tmp_path / "runs"
    code = main(base_args(out))
    _assert_failed_cleanly(out, code, capsys.readouterr().err, str(p), "corrupt")


def test_too_few_samples_fail_cleanly(env: Path, capsys) -> None:
    out = env / "runs"
    code = main(base_args(out, "--num-samples", "1", "--limit", "1"))
    _assert_failed_cleanly(out, code, capsys.readouterr().err, "num_samples=1 is too few samples")
    code = main(base_args(out, "--limit", "4", "--reference-size", "3"))
    _assert_failed_cleanly(out, code, capsys.readouterr().err, "--reference-size 4")


def test_bad_scales_and_shard_fail_cleanly(env: Path, capsys) -> None:
    out = env / "runs"
    _assert_failed_cleanly(out, main(base_args(out, "--cfg", "1,x")), capsys.readouterr().err, "--cfg", "'x'")
    _assert_failed_cleanly(out, main(base_args(out, "--shard", "2/2")), capsys.readouterr().err, "0 <= i < n")
    _assert_failed_cleanly(out, main(base_args(out, "--steps", "fast")), capsys.readouterr().err, "respacing")


def test_cfg_interval_is_recorded_counted_and_validated(env: Path, capsys) -> None:
    """--cfg-interval: in the spec and the results; the tiny models have T = 50 and ddim5 keeps t = 0, 10, 20,
    30, 40, so 15..35 guides two of the five steps: 5 + 2 evaluations per image for cfg-3 (measured by the pipeline's counter), 5 for
    the unguided scale 1 and CLIP guidance (the interval is classifier-free guidance's)."""
    out = env / "runs"
    assert main(base_args(out, "--limit", "4", "--clip", "2", "--cfg-interval", "15,35")) == 0
    run = only_run_dir(out)
    assert json.loads((run / "spec.json").read_text())["cfg_interval"] == [15, 35]
    rows = {r["setting_id"]: r for r in _read_csv(run / "results.csv")}
    assert float(rows["cfg-3"]["evals_per_image"]) == 7 and rows["cfg-3"]["cfg_interval"] == "15-35"
    assert float(rows["cfg-1"]["evals_per_image"]) == 5 and rows["cfg-1"]["cfg_interval"] == ""
    assert float(rows["clip-2"]["evals_per_image"]) == 5 and rows["clip-2"]["cfg_interval"] == ""
    # without the option the spec has no such key (older runs keep their fingerprints)
    assert main(base_args(env / "plain", "--limit", "4", "--cfg", "3")) == 0
    assert "cfg_interval" not in json.loads((only_run_dir(env / "plain") / "spec.json").read_text())
    for bad in ("700,300", "x", "1,2,3"):
        code = main(base_args(env / "bad", "--cfg-interval", bad))
        _assert_failed_cleanly(env / "bad", code, capsys.readouterr().err, "--cfg-interval", "0 <= lo <= hi")


def test_short_captions_option_prompts_with_short_captions_of_the_same_scenes(env: Path, capsys) -> None:
    """Short captions (the embedded profile's default since coco-fid version 4; --caption-style exact gives the
    exact ones): a run of its own whose prompts are the short captions of the same scenes (the references do
    not change), recorded in the spec and the results; refused for MS-COCO."""
    from glidebench.data.embedded import EmbeddedCaptionSet, parse_stated
    from glidebench.suites import load_suite

    assert load_suite("coco-fid").profiles["embedded"]["caption_style"] == "short"
    assert (
        main(base_args(env / "exact", "--limit", "6", "--cfg", "3", "--clip", "", "--caption-style", "exact"))
        == 0
    )
    assert main(base_args(env / "short", "--limit", "6", "--cfg", "3", "--clip", "")) == 0
    a, b = only_run_dir(env / "exact"), only_run_dir(env / "short")
    assert json.loads((b / "spec.json").read_text())["caption_style"] == "short"
    assert "caption_style" not in json.loads((a / "spec.json").read_text())
    pa = json.loads((a / "prompts.json").read_text())
    pb = json.loads((b / "prompts.json").read_text())
    assert [p["source"] for p in pa] == [p["source"] for p in pb]  # the same scenes
    records = {
        f"embedded:test:{r.index}": r for r in EmbeddedCaptionSet().eval_split("test", 1000, short=True)
    }
    assert [p["caption"] for p in pb] == [records[p["source"]].caption for p in pb]
    assert any(p["caption"] != q["caption"] for p, q in zip(pa, pb))
    for p in pb:
        parse_stated(p["caption"])
    assert json.loads((b / "provenance.json").read_text())["data"]["caption_style"] == "short"
    assert json.loads((a / "provenance.json").read_text())["data"]["caption_style"] == "exact"
    code = main(base_args(env / "bad", "--caption-style", "short", "--data", "coco", "--coco-root", str(env)))
    _assert_failed_cleanly(
        env / "bad", code, capsys.readouterr().err, "caption-style short is for the embedded"
    )


def test_attention_option_is_recorded_and_changes_only_the_last_bits(env: Path, capsys) -> None:
    """--attention sdpa: a run of its own (recorded in the spec), whose images agree with the einsum run's
    within a uint8 level or two (the kernels are equal up to float rounding); a list is refused."""
    assert main(base_args(env / "einsum", "--limit", "4", "--cfg", "3")) == 0
    assert main(base_args(env / "sdpa", "--limit", "4", "--cfg", "3", "--attention", "sdpa")) == 0
    a, b = only_run_dir(env / "einsum"), only_run_dir(env / "sdpa")
    assert a.name != b.name
    assert json.loads((b / "spec.json").read_text())["attention"] == "sdpa"
    assert "attention" not in json.loads((a / "spec.json").read_text())
    pngs = sorted((a / "images").rglob("*.png"))
    assert len(pngs) >= 4  # every setting of the run, 4 samples each
    for p in pngs:
        x = np.asarray(Image.open(p), dtype=np.int16)
        y = np.asarray(Image.open(b / p.relative_to(a)), dtype=np.int16)
        assert np.abs(x - y).max() <= 2, p.name
    code = main(base_args(env / "bad", "--attention", "einsum,sdpa"))
    _assert_failed_cleanly(env / "bad", code, capsys.readouterr().err, "attention must be one of")


def test_embedded_split_option(env: Path, capsys) -> None:
    """--embedded-split val takes captions and references from the other fixed split: recorded, and other images."""
    assert main(base_args(env / "val", "--limit", "4", "--cfg", "3", "--embedded-split", "val")) == 0
    assert main(base_args(env / "test", "--limit", "4", "--cfg", "3")) == 0
    val, test = only_run_dir(env / "val"), only_run_dir(env / "test")
    assert json.loads((val / "spec.json").read_text())["split"] == "val"
    assert json.loads((test / "spec.json").read_text())["split"] == "test"
    assert (val / "prompts.json").read_bytes() != (test / "prompts.json").read_bytes()
    code = main(base_args(env / "coco", "--embedded-split", "val", "--coco-root", str(env / "nowhere")))
    _assert_failed_cleanly(env / "coco", code, capsys.readouterr().err, "--embedded-split", "--coco-split")


def test_missing_coco_fails_cleanly(env: Path, capsys) -> None:
    out = env / "runs"
    code = main(base_args(out, "--coco-root", str(env / "nowhere")))
    _assert_failed_cleanly(out, code, capsys.readouterr().err, "COCO root", "nowhere", "--coco-root")


@pytest.mark.slow
def test_real_inception_end_to_end(monkeypatch, tmp_path: Path, tiny_models_dir: Path) -> None:
    """The real offline Inception (fid-helper): the run's FID equals fid_from_features on freshly extracted features."""
    from glidebench.features import InceptionExtractor
    from glidebench.metrics import fid_from_features
    from glidebench.store import ImageStore

    monkeypatch.setenv("GLIDEBENCH_MODELS", str(tiny_models_dir))
    monkeypatch.setenv("GLIDEBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    assert (
        main(
            base_args(out, "--limit", "4", "--cfg", "2", "--reference-size", "6", "--inception", "fid-helper")
        )
        == 0
    )
    run = only_run_dir(out)
    row = _read_csv(run / "results.csv")[0]
    ext = InceptionExtractor("fid-helper")
    gen = ext(torch.cat(list(ImageStore(run / "images" / "cfg-2").batches(list(range(4))))))["pool3"]
    from glidebench.data.embedded import EmbeddedCaptionSet, render

    refs = EmbeddedCaptionSet().eval_split("test", 6)
    ref = np.stack([render(r.scene, 64).astype(np.float64) for r in refs])
    ref = np.round(ref.reshape(6, 8, 8, 8, 8, 3).mean(axis=(2, 4))).astype(np.uint8)
    ref_f = ext(torch.from_numpy(ref).permute(0, 3, 1, 2))["pool3"]
    assert float(row["fid"]) == pytest.approx(fid_from_features(gen, ref_f), rel=1e-6)
    assert (
        json.loads((run / "provenance.json").read_text())["feature_extractor"]["inception_source"]
        == "fid-helper"
    )
    assert row["is_mean"] == "" and "IS not computed" in row["warnings"]


def test_profile_option_times_the_runs_own_models_into_the_report(env: Path) -> None:
    """--profile: RUN_DIR/throughput.json with one row per generator the run used (the base model at the run's
    chunk size, the noised CLIP because a CLIP setting is there), same fingerprint as without it, and the
    report's throughput section shows it."""
    args = base_args(env / "runs", "--limit", "4", "--cfg", "3", "--clip", "2", "--profile")
    args.remove("--no-report")
    assert main(args) == 0
    run = only_run_dir(env / "runs")
    doc = json.loads((run / "throughput.json").read_text())
    rows = {r["model"]: r for r in doc["rows"]}
    assert set(rows) == {"base", "clip-step"}
    chunk = json.loads((run / "spec.json").read_text())["batch_size"]
    assert rows["base"]["batch_size"] == chunk and rows["base"]["dtype"] == "fp32"
    assert all(r["ms_per_eval"] > 0 and r["gflop_per_eval"] > 0 for r in rows.values())
    html = (run / "report" / "index.html").read_text()
    assert 'id="throughput"' in html and "clip-step" in html
    # not part of the run's identity: the same command without --profile reuses the run directory
    assert main(base_args(env / "runs", "--limit", "4", "--cfg", "3", "--clip", "2")) == 0
    assert only_run_dir(env / "runs") == run
