"""``run --fast`` (GLIDE on glide.fast's path): recorded in the spec and fingerprint, refused where it does not
apply, resumable to the byte; and the metric stage's features: computed once per image set, never again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from glidebench.cli import build_parser, main
from glidebench.runner.options import RunOptions
from glidebench.runner.plan import resolve_plan
from glidebench.runner.rundir import Dist
from glidebench.spec import RunSpec

from .harness import CountingFeatures, base_args, image_bytes, metric_rows, only_run_dir


def plan_for(out: Path, *extra: str):
    args = build_parser().parse_args(base_args(out, *extra))
    return resolve_plan(RunOptions.from_args(args), Dist.from_env())


def test_fast_is_in_the_spec_and_fingerprint_and_absent_otherwise(env, tmp_path):
    official, fast = plan_for(tmp_path), plan_for(tmp_path, "--fast")
    assert "fast" not in official.spec.to_dict() and official.spec.attention == "einsum"
    assert fast.spec.to_dict()["fast"] is True and fast.spec.attention == "sdpa"
    assert fast.spec.fingerprint != official.spec.fingerprint and fast.run_dir != official.run_dir
    assert fast.generator.fast and not official.generator.fast
    # the protocol is the same: a fast run is comparable with an official one
    assert fast.spec.protocol_fingerprint == official.spec.protocol_fingerprint
    # a spec written before the option existed reads back with the same fingerprint
    assert RunSpec.from_dict(official.spec.to_dict()).fingerprint == official.spec.fingerprint
    assert RunSpec.from_dict(fast.spec.to_dict()).fast
    explicit = plan_for(tmp_path, "--fast", "--attention", "einsum")
    assert explicit.spec.attention == "einsum" and explicit.spec.fast


def test_fast_is_refused_for_other_generators(env, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    with pytest.raises(ValueError, match="--fast is GLIDE.s fast inference path; leave it out"):
        plan_for(tmp_path, "--fast", "--images", str(images))


def test_fast_run_resumes_to_the_same_bytes(env, tmp_path):
    """An interrupted fast run (whole chunks missing, as a killed run leaves them; the kill mechanics are
    tested in test_resume.py) resumes to the uninterrupted fast run's images and results."""
    args = ("--fast", "--clip", "2")
    assert main(base_args(tmp_path / "a", *args)) == 0
    run_a = only_run_dir(tmp_path / "a")
    assert main(base_args(tmp_path / "b", *args)) == 0
    run_b = only_run_dir(tmp_path / "b")
    removed = 0
    for setting in (run_b / "images").iterdir():
        for png in sorted(setting.glob("*.png"))[3:]:  # keep chunk 0 (images 0..2), drop the rest
            png.unlink()
            removed += 1
    for name in ("results.csv", "results.json", "results.md"):
        (run_b / name).unlink()
    shutil.rmtree(run_b / "features")
    assert removed >= 10
    assert main(base_args(tmp_path / "b", *args)) == 0
    assert image_bytes(run_b) == image_bytes(run_a)
    assert metric_rows(run_b) == metric_rows(run_a)


def test_features_are_extracted_once_per_image_and_never_on_a_rerun(env, tmp_path, monkeypatch):
    import glidebench.runner.stages as C

    seen: list[int] = []
    monkeypatch.setattr(C, "make_inception", lambda source, device, **kw: CountingFeatures(seen))
    out = tmp_path / "runs"
    assert main(base_args(out, "--fast")) == 0
    run = only_run_dir(out)
    n_images = sum(1 for _ in (run / "images").rglob("*.png"))
    assert n_images == 3 * 8  # cfg-1, cfg-3 and clip-2 (the profile's), 8 images each
    assert sum(seen) == n_images + 12  # every generated image once, the 12 references once
    seen.clear()
    for name in ("results.csv", "results.json", "results.md"):
        (run / name).unlink()
    assert main(base_args(out, "--fast")) == 0  # the metrics again, from the cached features
    assert seen == []
    assert (run / "results.csv").is_file()
