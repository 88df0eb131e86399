"""Resume: a run killed with SIGKILL (or interrupted with Ctrl-C) at several points and resumed gives byte-identical
images and the same results as an uninterrupted run; nothing is lost, duplicated or half-written."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidebench.cli import main

from .harness import (
    PY,
    base_args,
    harness_env,
    image_bytes,
    metric_rows,
    only_run_dir,
    subprocess_env,
    write_runner,
)

# 25 DDIM steps of the 50-step tiny model: slow enough (a fraction of a second per chunk) to kill mid-run.
ARGS = ("--steps", "ddim25", "--cfg", "1,3", "--clip", "2")
N_IMAGES = 3 * 8


def count_pngs(out: Path) -> int:
    return sum(1 for _ in out.rglob("*.png"))


def _default_sigint() -> None:
    # A background job of a non-interactive shell (`pytest &`) starts with SIGINT ignored, and children
    # inherit that; Python then installs no KeyboardInterrupt handler and Ctrl-C would be a no-op.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(runner: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([PY, str(runner), *base_args(out, *ARGS)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_default_sigint)  # fmt: skip


def stop_when(proc: subprocess.Popen, condition, sig: int, timeout: float = 240.0) -> bool:
    """Send ``sig`` once ``condition()`` holds; True if the process was still running when signalled."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if condition():
            proc.send_signal(sig)
            proc.wait(timeout=60)
            return True
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the run neither reached the kill point nor finished in time")


def assert_no_partial_files(out: Path, reference: dict[str, bytes]) -> None:
    run = only_run_dir(out)
    for rel, data in image_bytes(run).items():
        assert data == reference[rel], f"{rel} differs from the uninterrupted run's"
        Image.open(run / rel).load()  # decodable: never half-written


@pytest.fixture
def reference_run(monkeypatch, tmp_path, tiny_models_dir):
    harness_env(monkeypatch, tiny_models_dir, tmp_path / "cache")
    out = tmp_path / "uninterrupted"
    assert main(base_args(out, *ARGS)) == 0
    run = only_run_dir(out)
    return run, image_bytes(run), metric_rows(run)


def test_sigkill_at_several_points_then_resume(reference_run, tmp_path: Path, tiny_models_dir: Path) -> None:
    ref_dir, ref_images, ref_metrics = reference_run
    assert len(ref_images) == N_IMAGES
    out = tmp_path / "killed"
    env = subprocess_env(tiny_models_dir, tmp_path / "cache")
    runner = write_runner(tmp_path / "runner.py")
    killed_running = []
    # Kill points: inside the first chunk, inside the second setting, and once every image exists (metrics phase).
    for threshold in (1, 11, N_IMAGES):
        proc = start(runner, out, env)
        killed_running.append(stop_when(proc, lambda t=threshold: count_pngs(out) >= t, signal.SIGKILL))
        assert_no_partial_files(out, ref_images)
        if killed_running[-1]:
            assert not list(out.rglob("results.csv")), "a killed run must not leave a results table"
    assert killed_running[0] and killed_running[1], (
        "the kill points were not reached while the run was running"
    )
    # Resume (in-process): the same command finishes the run.
    assert main(base_args(out, *ARGS)) == 0
    run = only_run_dir(out)
    assert run.name == ref_dir.name
    assert image_bytes(run) == ref_images
    assert metric_rows(run) == ref_metrics
    assert not list((run / "images").rglob("*.tmp")) and not list((run / "timing").rglob("*.tmp"))


def test_ctrl_c_exits_130_and_resumes(reference_run, tmp_path: Path, tiny_models_dir: Path) -> None:
    _, ref_images, ref_metrics = reference_run
    out = tmp_path / "interrupted"
    proc = start(
        write_runner(tmp_path / "runner.py"), out, subprocess_env(tiny_models_dir, tmp_path / "cache")
    )
    assert stop_when(proc, lambda: count_pngs(out) >= 4, signal.SIGINT)
    assert proc.returncode == 130
    assert b"run the same command again to resume" in proc.stderr.read()
    assert_no_partial_files(out, ref_images)
    assert main(base_args(out, *ARGS)) == 0
    assert image_bytes(only_run_dir(out)) == ref_images
    assert metric_rows(only_run_dir(out)) == ref_metrics


def test_partial_chunk_is_regenerated_whole_and_only_missing_files_written(
    reference_run, tmp_path: Path
) -> None:
    ref_dir, ref_images, _ = reference_run
    store = ref_dir / "images" / "cfg-3"
    victim = store / "000004.png"  # in chunk [3, 6)
    victim.unlink()
    (store / ".000005.png.abc.tmp").write_bytes(b"half")  # what a kill during a write leaves behind
    neighbours = {p: p.stat().st_mtime_ns for p in store.glob("*.png")}
    time.sleep(0.01)
    assert main(base_args(ref_dir.parent.parent, *ARGS)) == 0
    assert victim.read_bytes() == ref_images["images/cfg-3/000004.png"]
    assert {p: p.stat().st_mtime_ns for p in neighbours} == neighbours  # existing files untouched
    assert not list(store.glob("*.tmp"))
    timing = (ref_dir / "timing" / "cfg-3" / "chunk_000001.json").read_text()
    assert '"written": 1' in timing and '"sampled": 3' in timing


def test_images_are_what_the_pipeline_gives_for_each_seed(reference_run, tiny_models_dir: Path) -> None:
    """An independent check of the store: the short last chunk [6, 8) of cfg-3, sampled here directly with 2 torch
    threads (the run used 1), equals the files."""
    import json

    import torch

    from glidebench import models as M

    torch.set_num_threads(2)
    ref_dir, ref_images, _ = reference_run
    prompts = json.loads((ref_dir / "prompts.json").read_text())
    plan = M.plan_models("embedded", None, False, directory=tiny_models_dir)
    pipe = M.load_models(plan, "cpu", "fp32").pipeline(torch.device("cpu"), "fp32")
    setting = json.loads((ref_dir / "settings.json").read_text())["cfg-3"]
    x = pipe.generate([p["caption"] for p in prompts[6:8]], [p["seed"] for p in prompts[6:8]], guidance="cfg",
                      scale=3.0, sampler=setting["sampler"], steps=setting["steps"])  # fmt: skip
    # the profile's sampler, the test's steps
    assert (setting["sampler"], setting["steps"]) == ("dpm++2m-sde", "ddim25")
    for j, i in enumerate(range(6, 8)):
        got = np.asarray(Image.open(ref_dir / "images" / "cfg-3" / f"{i:06d}.png"))
        assert np.array_equal(got, x[j].permute(1, 2, 0).numpy())
