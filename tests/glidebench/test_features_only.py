"""``run coco-fid --features-only``: generation, then every feature file the metrics stage reads, and a stop; a
later plain run of the same command extracts nothing again and gives the results of a plain run alone."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from glidebench.cli import main
from glidebench.features import GlideClipEmbedder

from .harness import CountingFeatures, base_args, metric_rows, only_run_dir

ARGS = ("--bootstrap-resamples", "20")
TIMING = ("wall_s", "images_per_s")


@pytest.fixture
def counts(env: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Images seen by the Inception stand-in and by the evaluator CLIP, per call."""
    import glidebench.runner.stages as C

    seen: dict[str, list[int]] = {"inception": [], "clip": []}
    monkeypatch.setattr(C, "make_inception", lambda source, device, **kw: CountingFeatures(seen["inception"]))
    clip_call = GlideClipEmbedder.__call__

    def counting_clip(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        seen["clip"].append(int(images.shape[0]))
        return clip_call(self, images)

    monkeypatch.setattr(GlideClipEmbedder, "__call__", counting_clip)
    return seen


def test_features_only_then_a_plain_run_extracts_nothing_twice(
    env: Path, counts: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = env / "runs"
    assert main(base_args(out, "--features-only", *ARGS)) == 0
    run = only_run_dir(out)
    log = capsys.readouterr().out
    n_images = sum(1 for _ in (run / "images").rglob("*.png"))
    settings = sorted(p.name for p in (run / "images").iterdir())
    assert n_images == 3 * 8 and settings == ["cfg-1", "cfg-3", "clip-2"]
    # every generated image through Inception and the evaluator CLIP once, the 12 references through Inception
    assert sum(counts["inception"]) == n_images + 12
    assert sum(counts["clip"]) == n_images
    assert len(list((run / "features").glob("*.npz"))) == 2 * len(settings)
    assert len(list((env / "cache" / "features").glob("*.npz"))) == 1
    assert not (run / "results.csv").exists() and not (run / "provenance.json").exists()
    assert "features: 7 of 7 files computed" in log and "features-only: stopped" in log

    for seen in counts.values():
        seen.clear()
    assert main(base_args(out, *ARGS)) == 0  # the plain run: resumes, reads every feature file
    log = capsys.readouterr().out
    assert counts == {"inception": [], "clip": []}
    assert "features: 0 of 7 files computed" in log
    assert (run / "results.csv").is_file()

    # a plain run alone (its own output root and feature cache) gives the same results
    monkeypatch.setenv("GLIDEBENCH_CACHE", str(env / "cache-alone"))
    assert main(base_args(env / "alone", *ARGS)) == 0
    alone = only_run_dir(env / "alone")
    assert sum(counts["inception"]) == n_images + 12 and sum(counts["clip"]) == n_images
    assert metric_rows(run) == metric_rows(alone)
    assert result_columns(run) == result_columns(alone)  # every column but the timing ones


def result_columns(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def test_features_only_is_refused_by_throughput(env: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "throughput", "--features-only", "--out", str(env / "runs")]) == 1
    assert "--features-only applies to the generate-and-measure suites" in capsys.readouterr().err
