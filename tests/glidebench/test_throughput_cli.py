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
