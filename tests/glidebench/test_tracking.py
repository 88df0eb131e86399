"""The results config block, the flat metrics and --log-to tensorboard (event files read back with
tensorboard's EventAccumulator); new spec fields leave existing fingerprints alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from glidebench.cli import main
from glidebench.tracking import check_log_to, flat_metrics, log_to_tensorboard

from .harness import base_args, only_run_dir


def test_flat_metrics_are_keyed_setting_slash_metric() -> None:
    rows = [
        {"setting_id": "cfg-2", "fid": 12.5, "kid_mean": math.nan, "clip_score": None, "clip_truncated": 3},
        {"setting_id": "clip-1", "fid": 20.0, "precision": 0.5, "warnings": "x"},
    ]
    assert flat_metrics(rows) == {"cfg-2/fid": 12.5, "cfg-2/clip_truncated": 3.0, "clip-1/fid": 20.0,
                                  "clip-1/precision": 0.5}  # fmt: skip


def _scalars(log_dir: Path) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: acc.Scalars(tag)[0].value for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_files_are_written_and_readable(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    doc = {"metrics": {"cfg-2/fid": 12.5, "cfg-2/clip_score_2p5": 0.75}, "config": {"model": {"label": "m"}}}
    log_to_tensorboard(tmp_path / "tb", doc)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert _scalars(tmp_path / "tb") == pytest.approx(doc["metrics"])


def test_log_to_checks_the_logger_before_the_run() -> None:
    with pytest.raises(ValueError, match="choose tensorboard or wandb"):
        check_log_to("mlflow")
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="the wandb package is not installed; pip install wandb"):
            check_log_to("wandb")


def test_run_writes_the_config_block_and_logs_to_tensorboard(env: Path) -> None:
    pytest.importorskip("tensorboard")
    out = env / "runs"
    assert main(base_args(out, "--log-to", "tensorboard")) == 0
    run = only_run_dir(out)
    doc = json.loads((run / "results_config.json").read_text())
    rows = json.loads((run / "results.json").read_text())
    assert isinstance(rows, list) and rows[0]["setting_id"] == "cfg-1"  # the rows stay as they were
    cfg = doc["config"]
    spec = json.loads((run / "spec.json").read_text())
    assert (
        cfg["model"]["weights"] == spec["weights"]
        and cfg["dtype"] == "fp32"
        and cfg["sampler"]["steps"] == "ddim5"
    )
    assert [s["setting_id"] for s in cfg["guidance"]["settings"]] == [r["setting_id"] for r in rows]
    assert cfg["metrics"]["fid_resize"] == "tf-bilinear" and cfg["metrics"]["versions"]["torch"]
    assert cfg["references"]["kind"] == "images" and doc["spec_fingerprint"] == spec["fingerprint"]
    assert doc["metrics"]["cfg-3/fid"] == pytest.approx(rows[1]["fid"])
    assert doc["metrics"]["cfg-1/clip_score_2p5"] == pytest.approx(rows[0]["clip_score_2p5"])
    assert _scalars(run / "tensorboard") == pytest.approx(doc["metrics"])


def test_new_spec_fields_leave_fingerprints_alone() -> None:
    from glidebench.spec import RunSpec, Setting

    spec = RunSpec(
        suite="coco-fid", suite_version=1, model="embedded", model_label="m", weights=(("base", "abc"),),
        data="coco", split="val2014", data_id="d", captions="one-per-image", num_samples=8, reference_size=12,
        seed=0, settings=(Setting("cfg", 2.0),), sampler="ddim", steps="ddim5", resolution=64, base_resolution=64,
        up_sampler="ddim", up_steps="fast27", upsample_temp=0.997, batch_size=4, dtype="fp32", device_type="cpu",
    )  # fmt: skip
    d = spec.to_dict()
    assert "fid_resize" not in d and "reference_stats" not in d
    clean = spec.replace(fid_resize="clean")
    assert clean.fingerprint != spec.fingerprint and clean.protocol_fingerprint != spec.protocol_fingerprint
    stats = spec.replace(reference_stats="f" * 64, reference_size=0)
    assert stats.to_dict()["reference_stats"] == "f" * 64 and RunSpec.from_dict(stats.record()) == stats
    with pytest.raises(ValueError, match="fid_resize must be one of"):
        spec.replace(fid_resize="area")
