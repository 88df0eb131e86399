"""Shared fixtures: the reference material beside the project (../shared/reference), when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    env = os.environ.get("GLIDEBENCH_SHARED")
    base = Path(env) if env else ROOT.parent / "shared"
    return base / "reference"


@pytest.fixture(scope="session")
def refdir() -> Path:
    d = reference_dir()
    if not (d / "golden_small.npz").exists():
        pytest.skip(
            f"reference material not found at {d} (a user's clone has no ../shared); parity tests skipped"
        )
    return d


@pytest.fixture(scope="session")
def golden(refdir: Path):
    return np.load(refdir / "golden_small.npz")


@pytest.fixture(scope="session")
def golden_meta(refdir: Path) -> dict:
    return json.loads((refdir / "golden_small.json").read_text())


@pytest.fixture(scope="session")
def state_dict_spec(refdir: Path) -> dict:
    return json.loads((refdir / "glide_state_dict_spec.json").read_text())["models"]


@pytest.fixture(scope="session")
def gpt2_dir(refdir: Path) -> Path:
    return refdir / "gpt2-bpe"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
