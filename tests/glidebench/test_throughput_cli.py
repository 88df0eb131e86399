"""`glidebench run throughput` end to end on tiny models (CPU)."""

from __future__ import annotations

import json

from glidebench.cli import main


def test_run_throughput_cli(tmp_path, capsys):
    rc = main(
        [
            "run",
            "throughput",
            "--size",
            "tiny",
            "--models",
            "base,clip-step",
            "--batch-sizes",
            "1",
            "--attention",
            "einsum,sdpa",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    rows = json.loads((tmp_path / "throughput" / "cpu-tiny" / "throughput.json").read_text())
    assert {(r["model"], r["attention"]) for r in rows} == {
        ("base", "einsum"),
        ("base", "sdpa"),
        ("clip-step", "einsum"),
        ("clip-step", "sdpa"),
    }
    assert all(r["ms_per_eval"] > 0 and r["gflop_per_eval"] > 0 for r in rows)
    assert "ms_per_eval" in capsys.readouterr().out


def test_run_throughput_rejects_bad_switch(tmp_path, capsys):
    assert main(["run", "throughput", "--size", "tiny", "--compile", "maybe", "--out", str(tmp_path)]) == 1
    assert "--compile must be off, on or off,on" in capsys.readouterr().err


def test_cuda_graph_on_cpu_is_an_error_row_not_a_crash(tmp_path):
    rc = main(
        ["run", "throughput", "--size", "tiny", "--models", "base", "--batch-sizes", "1", "--attention",
         "sdpa", "--cuda-graph", "off,on", "--repeats", "1", "--out", str(tmp_path)]
    )  # fmt: skip
    assert rc == 0
    rows = json.loads((tmp_path / "throughput" / "cpu-tiny" / "throughput.json").read_text())
    assert sorted(r["cuda_graph"] for r in rows) == [False, True]
    graph_row = next(r for r in rows if r["cuda_graph"])
    assert "CUDA graphs need a CUDA device" in graph_row["error"]
    assert next(r for r in rows if not r["cuda_graph"])["ms_per_eval"] > 0


def test_compile_and_cuda_graph_are_not_crossed():
    from glidebench.suites.throughput import cases

    got = cases(["base"], [1], ["fp32"], ["sdpa"], [False, True], [False], [False, True])
    # compile x graph is one optimisation twice: (off, off), (off, on), (on, off) remain
    assert sorted((c.compile, c.cuda_graph) for c in got) == [(False, False), (False, True), (True, False)]
