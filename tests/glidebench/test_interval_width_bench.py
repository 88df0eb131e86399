"""benchmarks/bench_interval_width.py spreads an expensive size over processes: each writes its draws to a
partial file, and ``--merge`` makes one row of them. The merged row must be the row of all draws together, and
files that share a seed (the same draws twice) must be refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .harness import load_benchmark


def _bench():
    return load_benchmark("bench_interval_width")


def test_merged_partials_are_the_row_of_all_their_draws(tmp_path: Path) -> None:
    bench = _bench()
    paths = []
    for seed in (3, 4):
        path = tmp_path / f"p{seed}.json"
        bench.run(200, 8, 3, "jackknife", 0, seed, str(path), ("fid", "kid_mean", "clip_score"))
        paths.append(str(path))
    merged = bench.merge(paths)
    assert merged["draws"] == 6 and merged["seeds"] == [3, 4]
    raws = [json.loads(Path(p).read_text())["raw"] for p in paths]
    for metric in ("fid", "kid_mean", "clip_score"):
        est = np.array(raws[0]["est"][metric] + raws[1]["est"][metric])
        # the true SD of the merged row is the sample SD of all six estimates, computed here independently
        assert merged["metrics"][metric]["true_sd"] == pytest.approx(est.std(ddof=1), rel=1e-12)
        assert merged["metrics"][metric]["mean"] == pytest.approx(est.mean(), rel=1e-12)
        covered = [lo <= est.mean() <= hi for lo, hi in raws[0]["lohi"][metric] + raws[1]["lohi"][metric]]
        assert merged["metrics"][metric]["coverage"] == pytest.approx(np.mean(covered))
    assert not np.allclose(raws[0]["est"]["fid"], raws[1]["est"]["fid"])  # different seeds, different draws


def test_merging_files_of_one_seed_or_of_another_size_is_refused(tmp_path: Path) -> None:
    bench = _bench()
    a, b, c = (str(tmp_path / f"{x}.json") for x in "abc")
    bench.run(200, 8, 2, "jackknife", 0, 1, a, ("fid",))
    bench.run(200, 8, 2, "jackknife", 0, 1, b, ("fid",))
    bench.run(300, 8, 2, "jackknife", 0, 2, c, ("fid",))
    with pytest.raises(SystemExit, match="share a --seed"):
        bench.merge([a, b])
    with pytest.raises(SystemExit, match="not a partial file of the same size"):
        bench.merge([a, c])


def test_point_only_draws_are_the_estimates_of_the_interval_draws(tmp_path: Path) -> None:
    """The cheap point-only draws (for the true SD) compute what the harness reports: the same seed gives the
    same estimates as the draws put through the metrics stage's interval code; merged with interval draws of
    another seed, the true SD counts every draw and the interval SD only the draws with an interval."""
    bench = _bench()
    full, point, other = (str(tmp_path / f"{x}.json") for x in ("full", "point", "other"))
    bench.run(1000, 8, 2, "jackknife", 0, 5, full)
    bench.run(1000, 8, 2, "jackknife", 0, 5, point, point_only=True)
    a, b = (json.loads(Path(p).read_text())["raw"] for p in (full, point))
    for metric in bench.METRICS:
        assert b["est"][metric] == pytest.approx(a["est"][metric], rel=1e-9, abs=1e-12), metric
        assert b["half"][metric] == [] and len(a["half"][metric]) == 2
    bench.run(1000, 8, 3, "jackknife", 0, 6, other, point_only=True)
    merged = bench.merge([full, other])
    assert (merged["draws"], merged["interval_draws"]) == (5, 2)


def test_precision_and_recall_widths_are_read_with_the_split_samples_quantile() -> None:
    from scipy.stats import t

    bench = _bench()
    q = bench.quantiles("jackknife", 1000, 40, bench.METRICS)
    assert q["fid"] == pytest.approx(t.ppf(0.975, 39)) and q["kid_mean"] == q["fid"]
    assert q["precision"] == pytest.approx(t.ppf(0.975, 15))  # S (q - 1) = 5 x 3 at 1,000 generated rows
    assert bench.quantiles("jackknife", 500, 40, ("recall",))["recall"] == pytest.approx(t.ppf(0.975, 10))
