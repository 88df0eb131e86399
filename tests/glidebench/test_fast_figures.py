"""The fast-path benchmarks (benchmarks/fast_figures.py, bench_fast.py, bench_allocator.py) on CPU with tiny models:
their tables' columns, values that must be finite and positive, the projected-hours formula, the output
differences, and the syntax of the GPU figures script that runs them."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import torch

from .harness import load_benchmark

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def fast_figures() -> ModuleType:
    return load_benchmark("fast_figures")


@pytest.fixture(scope="module")
def bench_fast() -> ModuleType:
    return load_benchmark("bench_fast")


TINY = ["--device", "cpu", "--size", "tiny", "--dtypes", "fp32", "--loop-steps", "2", "--repeats", "1"]


def test_fast_figures_table(fast_figures, tmp_path):
    returned = fast_figures.main([*TINY, "--batch-sizes", "1,2", "--warmup", "1", "--out", str(tmp_path)])
    table = pd.read_csv(tmp_path / "fast_figures.csv")
    assert list(table.columns) == fast_figures.COLUMNS
    assert len(table) == len(returned) == 4
    assert table["error"].isna().all(), table["error"].tolist()
    assert sorted(zip(table["variant"], table["batch_size"])) == [
        ("fast", 1), ("fast", 2), ("official", 1), ("official", 2)
    ]  # fmt: skip
    assert (table["rows"] == 2 * table["batch_size"]).all()
    assert (table["loop_steps"] == 2).all()
    positive = [
        "ms_per_eval", "ms_min", "ms_max", "gflop_per_eval", "achieved_tflops", "peak_memory_mib", "loop_s",
        "images_per_s", "projected_gpu_hours_per_scale",
    ]  # fmt: skip
    for col in positive:
        values = table[col].astype(float)
        assert values.map(math.isfinite).all() and (values > 0).all(), (col, values.tolist())
    assert table["utilisation"].isna().all()  # no peak FLOP/s for a CPU
    for _, r in table.iterrows():
        assert r["ms_min"] <= r["ms_per_eval"] <= r["ms_max"]
        assert r["images_per_s"] == pytest.approx(r["batch_size"] / r["loop_s"], rel=1e-9)
        assert r["achieved_tflops"] == pytest.approx(r["gflop_per_eval"] / r["ms_per_eval"], rel=1e-9)
        hours = 30_000 / r["batch_size"] * 250 * r["ms_per_eval"] / 1000 / 3600
        assert r["projected_gpu_hours_per_scale"] == pytest.approx(hours, rel=1e-9)
    # FLOPs are counted per shape and are the model's, not the variant's: twice the batch, twice the FLOPs
    flops = table.groupby("batch_size")["gflop_per_eval"]
    assert (flops.nunique() == 1).all()
    assert flops.first()[2] == pytest.approx(2 * flops.first()[1], rel=1e-3)
    fast = table[table["variant"] == "fast"]
    assert fast["fast_path"].str.contains("attention=sdpa").all()
    assert table.loc[table["variant"] == "official", "fast_path"].isna().all()
    md = (tmp_path / "fast_figures.md").read_text()
    assert "samples / B x base_steps x ms_per_eval / 3.6e6" in md
    largest = table[(table["variant"] == "fast") & (table["batch_size"] == 2)].iloc[0]
    assert f"- fp32 fast: {largest['projected_gpu_hours_per_scale']:.3g} h per scale (B = 2," in md


def test_fast_figures_a_failing_row_is_a_row(fast_figures, tmp_path):
    args = [*TINY, "--batch-sizes", "1", "--variants", "official", "--row-limit-s", "0.001"]
    fast_figures.main([*args, "--out", str(tmp_path)])
    table = pd.read_csv(tmp_path / "fast_figures.csv")
    assert len(table) == 1 and table["error"].iloc[0].startswith("RowTimeout")
    assert table["ms_per_eval"].isna().all()


def test_fast_figures_rejects_fp16_on_cpu(fast_figures, tmp_path):
    with pytest.raises(SystemExit, match="fp16"):
        fast_figures.main(["--device", "cpu", "--size", "tiny", "--dtypes", "fp16", "--out", str(tmp_path)])


def test_bench_fast_table(bench_fast, tmp_path):
    args = ["--size", "tiny", "--repeats", "1", "--threads", "1", "--batch-sizes", "1,2"]
    bench_fast.main([*args, "--out", str(tmp_path)])
    table = pd.read_csv(tmp_path / "bench_fast.csv")
    assert list(table.columns) == bench_fast.COLUMNS
    assert table["variant"].tolist() == list(bench_fast.VARIANTS) * 2
    assert table["images"].tolist() == [1] * len(bench_fast.VARIANTS) + [2] * len(bench_fast.VARIANTS)
    assert (table["rows"] == 2 * table["images"]).all()
    assert (table["median_s"] > 0).all() and table["median_s"].map(math.isfinite).all()
    for _, group in table.groupby("images"):
        official = group[group["variant"] == "official"].iloc[0]
        assert official["ratio_to_official"] == 1 and official["max_abs_diff"] == 0
        for _, r in group.iterrows():
            assert r["ratio_to_official"] == pytest.approx(r["median_s"] / official["median_s"], rel=1e-9)
    for variant in ("fast", "fast+channels_last", "fast+channels_last+nchw_gn"):
        rows = table[table["variant"] == variant]
        assert (rows["max_abs_diff"] < 1e-4).all(), (variant, rows["max_abs_diff"].tolist())
        assert rows["note"].isna().all()
    native = table[table["variant"] == "fast+channels_last+native_gn"]
    assert (native["max_abs_diff"] < 1e-3).all()
    assert native["note"].str.contains("outside tolerance").all()
    md = (tmp_path / "bench_fast.md").read_text()
    assert "| fast+channels_last+native_gn |" in md
    # roofline: one evaluation's FLOPs per batch size (twice the rows, twice the FLOPs), rates from the medians
    gflop = table.groupby("images")["gflop"].agg(["min", "max"])
    assert (gflop["min"] == gflop["max"]).all() and gflop.loc[2, "min"] == pytest.approx(
        2 * gflop.loc[1, "min"]
    )
    assert table["gflop_per_s"].tolist() == pytest.approx((table["gflop"] / table["median_s"]).tolist())
    peak = table["gflop_per_s"] / table["of_sgemm_peak"]  # one measured peak per batch size
    assert (peak > 0).all()
    for _, p in peak.groupby(table["images"]):
        assert p.tolist() == pytest.approx([p.iloc[0]] * len(p), rel=1e-9)
    assert md.count("sgemm peak") == 2 and "floor_ratio" in md


def test_bench_fast_flops_and_floor_ratio(bench_fast):
    """FLOPs of a hand-countable model (one Linear: 2 x rows x in x out) and the floor ratio's arithmetic."""

    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 4, bias=False)

        def forward(self, x, t, text_emb=None):
            return self.fc(x)

    assert bench_fast.forward_flops(Lin(), torch.zeros(5, 8), torch.zeros(5), ()) == 2 * 5 * 8 * 4
    # 100 GFLOP at a 50 GFLOP/s peak takes 2 s; against an official 4 s the floor is 0.5x
    assert bench_fast.floor_ratio(100.0, 50.0, 4.0) == pytest.approx(0.5)


def test_bench_fast_random_models_have_nonzero_outputs(bench_fast):
    """The zero-initialised layers get random values, so the differences compare real outputs."""
    model = bench_fast.load_base("tiny")
    x, t, text_emb = bench_fast.inputs(model, 1)
    with torch.no_grad():
        out = model(x, t, text_emb=text_emb)
    assert out.abs().max() > 0.1
    assert bench_fast.randomise_zero_layers(model) == 0  # nothing left at zero


def test_gpu_figures_script_parses():
    script = BENCHMARKS / "gpu_figures.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "benchmarks/fast_figures.py --device cuda --size full --batch-sizes 16,64,128" in text
    limits = [int(w) for line in text.splitlines() for w in _limits(line)]
    assert sum(limits) == 580 and "add up to 70 + 90 + 110 + 50 + 230 + 30 = 580 s" in " ".join(text.split())


def _limits(line: str) -> list[str]:
    """The time limit a line of the script sets: 'timeout N ...' or a 'tp NAME N ...' part."""
    words = line.split()
    if words[:1] == ["timeout"] and words[1].isdigit():
        return [words[1]]
    if words[:1] == ["tp"] and len(words) > 2 and words[2].isdigit():
        return [words[2]]
    return []


def test_bench_allocator_same_bits_and_table(tmp_path):
    """Child processes with glibc's defaults and with tune_cpu_allocator sample the same tensor to the bit
    (the allocator decides where values live, not what they are), on both paths."""
    bench = load_benchmark("bench_allocator")
    args = ["--size", "tiny", "--images", "1", "--repeats", "1", "--threads", "1", "--out", str(tmp_path)]
    table = bench.main(args)
    if table is None:
        pytest.fail("the parent returned no table")
    assert list(table.columns) == bench.COLUMNS
    assert table[["allocator", "path"]].values.tolist() == [
        ["plain", "official"],
        ["plain", "fast"],
        ["tuned", "official"],
        ["tuned", "fast"],
    ]
    assert table["same_bits"].all()
    assert (table["median_s"] > 0).all()
    plain_official = table.iloc[0]["median_s"]
    assert table["ratio_to_plain_official"].tolist() == pytest.approx(
        (table["median_s"] / plain_official).tolist()
    )
    assert (tmp_path / "bench_allocator.csv").is_file() and "mmap and trim thresholds" in (
        tmp_path / "bench_allocator.md"
    ).read_text()


def test_bench_allocator_summary_flags_different_bits(tmp_path):
    bench = load_benchmark("bench_allocator")
    run = lambda s, h: {"official": {"seconds": s, "sha256": h}}  # noqa: E731
    table = bench.summarise({"plain": [run(2.0, "a"), run(4.0, "a")], "tuned": [run(1.5, "a"), run(1.0, "b")]},
                            "tiny", 1, ["official"])  # fmt: skip
    assert table["median_s"].tolist() == [3.0, 1.25]
    assert table["ratio_to_plain_official"].tolist() == pytest.approx([1.0, 1.25 / 3.0])
    assert table["same_bits"].tolist() == [True, False]
