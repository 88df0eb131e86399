"""Progress by default: one overall bar with an ETA on a terminal (generation, reference features, features per
setting, metrics, intervals), a heartbeat line when standard error is not a terminal, silence with --quiet."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest

import glidebench.runner.progress as P
from glidebench.cli import main
from glidebench.generators import Capabilities, Generator
from glidebench.runner.progress import Progress, Stage
from glidebench.runner.rundir import RunLog


class SlowToy(Generator):
    """Flat images, ``delay`` seconds per chunk: a stage long enough for a heartbeat."""

    def __init__(self, delay: float = 0.0) -> None:
        self.name, self.delay = "slow-toy", float(delay)
        self.capabilities = Capabilities(guidance=("cfg", "none"), resolution=8)

    def identity(self) -> dict[str, str]:
        return {"slow-toy": "v1"}

    def generate(self, captions, seeds, setting, options):
        time.sleep(self.delay)
        return np.stack([np.full((8, 8, 3), (29 * s) % 256, np.uint8) for s in seeds])


def make(delay: float = 0.0) -> SlowToy:
    return SlowToy(delay)


def _args(out: Path, *extra: str) -> list[str]:
    return [
        "run", "coco-fid", "--generator", f"{__name__}:make", "--limit", "6", "--cfg", "1,2", "--clip", "",
        "--batch-size", "3", "--reference-size", "6", "--out", str(out), "--no-report", *extra,
    ]  # fmt: skip


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_from_measured_rates_and_priors() -> None:
    clock = Clock()
    stages = [
        Stage("generate", "cfg-2", 10),
        Stage("features", "cfg-2/inception", 10),
        Stage("metrics", "cfg-2", 10),
    ]
    p = Progress(RunLog(0, 1, False), stages, "off", "cpu", clock=clock)
    assert p.eta() is None and p.fraction() == 0.0  # generation has no prior: unknown until timed
    assert "ETA ?" in p.status()
    clock.t = 4.0
    p.advance("generate", "cfg-2", 5)  # 0.8 s per image measured
    feats, metrics = 10 * P.PRIORS["features"]["cpu"], 10 * P.PRIORS["metrics"]["cpu"]
    assert p.eta() == pytest.approx(5 * 0.8 + feats + metrics)
    assert p.fraction() == pytest.approx(4.0 / (4.0 + p.eta()))
    clock.t = 8.0
    p.advance("generate", "cfg-2", 5)
    p.finish_stage("features", "cfg-2/inception")  # found in the cache: done, not timed
    assert p.rate("features") == P.PRIORS["features"]["cpu"]
    assert p.eta() == pytest.approx(metrics)
    clock.t = 9.0
    p.advance("metrics", "cfg-2", 10)
    assert p.eta() == 0.0 and p.fraction() == 1.0
    assert p.status() == "glidebench: 100% after 00:09, ETA 00:00 (measuring cfg-2)"


def test_heartbeat_lines_when_output_is_not_a_terminal(env: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(P, "HEARTBEAT_S", 0.05)
    assert main(_args(env / "runs", "--generator-args", "delay=0.2")) == 0
    captured = capsys.readouterr()
    beats = [x for x in captured.err.splitlines() if x.startswith("glidebench: ") and "% after " in x]
    assert len(beats) >= 3, captured.err
    assert any("generating cfg-" in x for x in beats), beats
    # clock texts are mm:ss, or h:mm:ss from an hour on (an early ETA on a loaded machine can reach it)
    clock = r"(\d+:)?\d\d:\d\d"
    assert all(re.fullmatch(rf"glidebench: \d+% after {clock}, ETA (\?|{clock}) \(.+\)", x) for x in beats), (
        beats
    )
    assert "%|" not in captured.err  # no bar drawn into a file
    assert "FID" in captured.out  # the results still print


def test_quiet_silences_the_heartbeat(env: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(P, "HEARTBEAT_S", 0.05)
    assert main(_args(env / "runs", "--generator-args", "delay=0.2", "--quiet")) == 0
    err = capsys.readouterr().err
    assert "% after" not in err and "%|" not in err, err


def test_one_overall_bar_on_a_terminal(env: Path, monkeypatch, capsys) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(_args(env / "runs")) == 0
    drawn = terminal.getvalue()
    frames = [f for f in re.split(r"[\r\n]", drawn) if f.strip()]
    assert frames and all(f.startswith("glidebench ") for f in frames), frames  # one bar, no per-chunk bars
    assert "ETA" in drawn and "generating cfg-1" in drawn and "features reference/inception" in drawn
    assert "features cfg-2/inception" in drawn and "measuring cfg-2" in drawn
    assert re.search(r"glidebench 100%\|.*ETA 00:00, done", frames[-1]), frames[-1]
    out = capsys.readouterr().out
    assert "FID" in out and "chunk 2/2" in out  # the log and the results are unchanged, on stdout


def test_progress_flag_draws_the_bar_without_a_terminal(env: Path, capsys) -> None:
    assert main(_args(env / "runs", "--progress")) == 0
    err = capsys.readouterr().err
    assert "glidebench 100%|" in err and "% after" not in err
