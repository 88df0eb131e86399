"""Scale-out: `--shard i/n` job arrays and `torchrun --nproc-per-node 2` (gloo, CPU) produce the same files, bit for
bit, and the same numbers as a single-process run; metrics are computed once, after every chunk exists."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from glidebench.cli import main

from .harness import (
    METRICS,
    PY,
    base_args,
    harness_env,
    image_bytes,
    only_run_dir,
    subprocess_env,
    write_runner,
)

ARGS = ("--cfg", "1,3", "--clip", "2")


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="") as f:
        return [{k: r[k] for k in METRICS} for r in csv.DictReader(f)]


def workers_of(run_dir: Path) -> set[str]:
    return {json.loads(p.read_text())["worker"] for p in (run_dir / "timing").rglob("chunk_*.json")}


@pytest.fixture
def single_run(monkeypatch, tmp_path, tiny_models_dir):
    harness_env(monkeypatch, tiny_models_dir, tmp_path / "cache")
    out = tmp_path / "single"
    assert main(base_args(out, *ARGS)) == 0
    run = only_run_dir(out)
    return run, image_bytes(run), metric_rows(run)


def test_shards_then_last_shard_computes_metrics(single_run, tmp_path: Path, capsys) -> None:
    ref_dir, ref_images, ref_metrics = single_run
    out = tmp_path / "sharded"
    capsys.readouterr()
    assert main(base_args(out, *ARGS, "--shard", "1/2")) == 0
    assert "shard 1/2 done" in capsys.readouterr().out
    run = only_run_dir(out)
    assert not (run / "results.csv").exists()
    # Shard 1 wrote exactly the odd chunks ([3, 6) of 8 images in chunks of 3).
    assert sorted(p.name for p in (run / "images" / "cfg-1").glob("*.png")) == [
        f"{i:06d}.png" for i in (3, 4, 5)
    ]
    assert main(base_args(out, *ARGS, "--merge")) == 1  # incomplete: a clear error, no results
    assert "Finish the other shards first" in capsys.readouterr().err
    assert not (run / "results.csv").exists()
    assert main(base_args(out, *ARGS, "--shard", "0/2")) == 0
    assert run.name == ref_dir.name
    assert image_bytes(run) == ref_images
    assert metric_rows(run) == ref_metrics
    assert workers_of(run) == {"0/2", "1/2"}
    assert main(base_args(out, *ARGS, "--merge")) == 0  # recomputes from the files: same numbers
    assert metric_rows(run) == ref_metrics


def test_torchrun_two_processes_equal_single_process(
    single_run,
    tmp_path: Path,
    tiny_models_dir: Path,
) -> None:
    ref_dir, ref_images, ref_metrics = single_run
    out = tmp_path / "torchrun"
    runner = write_runner(tmp_path / "runner.py")
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(runner),
           *base_args(out, *ARGS)]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env(tiny_models_dir, tmp_path / "cache"), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(out)
    assert run.name == ref_dir.name
    assert image_bytes(run) == ref_images
    assert metric_rows(run) == ref_metrics
    assert workers_of(run) == {"0/2", "1/2"}  # both ranks generated
    # Metrics once, on rank 0: a single results table, and only rank 0 printed the first line.
    assert proc.stdout.count("glidebench coco-fid:") == 1
    assert proc.stdout.count("(+ results.json, provenance.json") == 1
