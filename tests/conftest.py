"""Shared fixtures. The reference data (tests/data/README.md): outputs of OpenAI's glide-text2im on small
random models, the official checkpoints' state-dict layout and the GPT-2 BPE files, committed with the tests
so that every clone runs every parity test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parent / "data"


def reference_file(name: str) -> Path:
    """A file of tests/data; missing, the test fails (it never skips): the data belong to the repository."""
    path = DATA / name
    if not path.exists():
        pytest.fail(
            f"reference data {path} missing: it is part of the repository (tests/data/README.md)", False
        )
    return path


@pytest.fixture(scope="session")
def refdir() -> Path:
    return reference_file("golden_small.npz").parent


@pytest.fixture(scope="session")
def golden():
    return np.load(reference_file("golden_small.npz"))


@pytest.fixture(scope="session")
def golden_meta() -> dict:
    return json.loads(reference_file("golden_small.json").read_text())


@pytest.fixture(scope="session")
def state_dict_spec() -> dict:
    return json.loads(reference_file("glide_state_dict_spec.json").read_text())["models"]


@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    for name in ("encoder.json.gz", "vocab.bpe.gz"):
        reference_file(f"gpt2-bpe/{name}")
    return DATA / "gpt2-bpe"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
