"""The staged coco-fid runner: typed options, the plan's identities, data sources and the module limits.

The fingerprint test re-plans every shipped report in ``reports/*/spec.json`` from its recorded options: the
refactored option resolution, data sources and model planning must give the very same RunSpec, so a resumed
run of any shipped report finds its directory (an independent record: the spec files were written by the
runner when those reports were made).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from glidebench.runner.options import RunOptions
from glidebench.runner.plan import resolve_plan
from glidebench.runner.rundir import Dist
from glidebench.suites import load_suite

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "reports").glob("*/spec.json"))


def _options_of(spec: dict) -> RunOptions:
    """The options that made ``spec`` (single-object runs record the one-object scenes among the profile's
    reference_size records, so that option is left to the profile)."""
    scales = {
        kind: ",".join(f"{s['scale']:g}" for s in spec["settings"] if s["guidance"] == kind)
        for kind in ("cfg", "clip")
    }
    return RunOptions(
        suite=spec["suite"], model=spec["model"], data=spec["data"], embedded_split=spec["split"],
        captions=spec["captions"], caption_style=spec.get("caption_style", "exact"),
        num_samples=spec["num_samples"], seed=spec["seed"],
        reference_size=None if spec["captions"] == "single-object" else spec["reference_size"],
        cfg=scales["cfg"], clip=scales["clip"], unguided=any(s["guidance"] == "none" for s in spec["settings"]),
        sampler=spec["sampler"], steps=spec["steps"], resolution=str(spec["resolution"]),
        up_sampler=spec["up_sampler"], up_steps=spec["up_steps"], upsample_temp=spec["upsample_temp"],
        batch_size=spec["batch_size"], dtype=spec["dtype"], device=spec["device_type"], inception=spec["inception"],
        attention=spec.get("attention"),
        cfg_interval=",".join(map(str, spec["cfg_interval"])) if spec.get("cfg_interval") else None,
    )  # fmt: skip


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.parent.name for p in SPECS])
def test_shipped_report_fingerprints_replan(spec_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIDEBENCH_MODELS", raising=False)
    monkeypatch.delenv("GLIDEBENCH_COCO", raising=False)
    spec = json.loads(spec_path.read_text())
    if spec["model"] != "embedded":
        pytest.skip("official weights are not on this machine")
    if load_suite(spec["suite"]).version != spec["suite_version"]:
        pytest.skip(f"{spec_path} was made by {spec['suite']} version {spec['suite_version']}")
    plan = resolve_plan(_options_of(spec), Dist())
    assert dict(plan.spec.weights) == spec["weights"]
    assert plan.spec.fingerprint == spec["fingerprint"]
    assert plan.run_dir.name.endswith(spec["fingerprint"][:12])


def test_shipped_reports_exist() -> None:
    assert {p.parent.name for p in SPECS} >= {"example", "exact-captions", "attributes"}


def test_options_from_args_take_given_values_only() -> None:
    import argparse

    ns = argparse.Namespace(suite="nfe", steps=None, cfg="1,3", unrelated="x", quiet=True)
    o = RunOptions.from_args(ns)
    assert (o.suite, o.cfg, o.quiet, o.steps, o.out) == ("nfe", "1,3", True, None, "runs")


def test_embedded_source_refuses_coco_only_and_vice_versa(tmp_path: Path) -> None:
    from glidebench.data.coco_source import check_options

    with pytest.raises(ValueError, match="single-object is for the embedded set"):
        check_options({"captions": "single-object"})
    with pytest.raises(ValueError, match="short is for the embedded set"):
        check_options({"captions": "one-per-image", "caption_style": "short"})
    with pytest.raises(ValueError, match="--embedded-split applies to the embedded set"):
        resolve_plan(RunOptions(data="coco", coco_root=str(tmp_path), embedded_split="val"), Dist())


def test_embedded_source_prompts_follow_the_protocol() -> None:
    """One caption per image: a seeded permutation of the first reference_size records (independent
    recomputation with numpy), seeds = seed + index."""
    import numpy as np

    from glidebench.data.embedded import EmbeddedCaptionSet
    from glidebench.data.embedded_source import EmbeddedSource

    opts = {"split": "test", "num_samples": 5, "reference_size": 9, "seed": 7, "captions": "one-per-image"}
    src = EmbeddedSource(opts | {"caption_style": "exact"})
    records = EmbeddedCaptionSet().eval_split("test", 9)
    picks = np.random.default_rng(7).permutation(9)[:5]
    assert src.captions == [records[int(k)].caption for k in picks]
    assert [p.seed for p in src.prompts] == [7 + i for i in range(5)]
    assert src.reference_count == 9 and src.setting_metrics is not None
    batches = list(src.reference_batches(32, 4)())
    assert [b.shape[0] for b in batches] == [4, 4, 1] and batches[0].shape[1:] == (3, 32, 32)


RUNNER_MODULES = sorted(p.name for p in (ROOT / "glidebench" / "runner").glob("*.py"))


def _functions(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("name", RUNNER_MODULES)
def test_runner_functions_are_short(name: str) -> None:
    long = {f: n for f, n in _functions(ROOT / "glidebench" / "runner" / name) if n > 80}
    assert not long, f"functions over 80 lines in glidebench/runner/{name}: {long}"


@pytest.mark.parametrize("package", ["runner", "suites", "models", "report"])
def test_modules_stay_under_450_lines(package: str) -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "glidebench" / package).glob("*.py")}
    assert sizes, f"glidebench/{package} has no modules"
    big = {k: v for k, v in sizes.items() if v > 450}
    assert not big, f"modules over 450 lines in glidebench/{package}: {big}"


def test_cli_suite_choices_come_from_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A suite file dropped into the registry is a valid `run` choice, with no CLI edit."""
    import shutil

    import glidebench.suites as S
    from glidebench.cli import build_parser

    suites = tmp_path / "suites"
    shutil.copytree(S.suites_dir(), suites)
    data = json.loads((suites / "coco-fid.json").read_text())
    data["suite"] = "my-suite"
    data["presets"]["quick"] = {"description": "a quick preset", "num_samples": 8}
    (suites / "my-suite.json").write_text(json.dumps(data))
    monkeypatch.setattr(S, "suites_dir", lambda: suites)
    args = build_parser().parse_args(["run", "my-suite", "--preset", "quick"])
    assert (args.suite, args.preset) == ("my-suite", "quick")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "no-such-suite"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device", "tpu"], "--device 'tpu' is not a device here"),
        (["--steps", "0"], "--steps '0' keeps no step"),
        (["--steps", "ddim0"], "--steps 'ddim0' cannot respace"),
        (["--cfg-interval", "0,5000"], "--cfg-interval 0,5000: use LO,HI with 0 <= LO <= HI <= 999"),
        (["--limit", "0"], "--limit must be >= 1, got 0"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--reference-size", "-1"], r"--reference-size must be >= 0, got -1 \(0 = the whole split\)"),
        (["--num-samples", "0"], "--num-samples must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--upsample-temp", "0"], "--upsample-temp must be > 0"),
    ],
)
def test_bad_options_are_refused_before_any_work(flags, message, tmp_path: Path, capsys) -> None:
    import re

    from glidebench.cli import main

    out = tmp_path / "runs"
    assert main(["run", "coco-fid", "--out", str(out), "--dry-run", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("glidebench: error: ") and re.search(message, err), err
    assert "Traceback" not in err and not out.exists()


def test_cuda_without_a_gpu_is_refused_even_in_a_dry_run(tmp_path: Path, capsys) -> None:
    import torch

    from glidebench.cli import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    assert main(["run", "coco-fid", "--out", str(tmp_path), "--dry-run", "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "--device cuda: no CUDA device is visible" in err and "--device cpu" in err


HOLDER = """
import sys, time
from pathlib import Path
from glidebench.spec import Worker
from glidebench.runner.rundir import RunLock
with RunLock(Path(sys.argv[1]), Worker()):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_the_same_worker_is_refused_and_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from glidebench.runner.rundir import RunLock, RunLocked
    from glidebench.spec import Worker

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=rf"already running this run .*pid {holder.pid} on "):
            RunLock(run_dir, Worker()).__enter__()
        # another worker of the same run (a shard) is not blocked
        with RunLock(run_dir, Worker(1, 2)):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(run_dir, Worker()) as lock:  # the killed holder's lock is taken over
        assert f"pid {holder.pid}" in lock.previous
    with RunLock(run_dir, Worker()) as lock:  # a finished holder leaves nothing to take over
        assert lock.previous == ""
