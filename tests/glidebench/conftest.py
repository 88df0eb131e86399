"""Fixtures of the harness tests (helpers in harness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .harness import build_tiny_models, harness_env


@pytest.fixture(autouse=True)
def single_thread():
    """One torch thread: on the shared 2-core machines this is many times faster for tiny models (and the
    images are the same: the harness tests also check that against multi-process runs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_models_dir: Path) -> Path:
    """A harness environment in ``tmp_path``: the tiny models, a private cache, the cheap Inception stand-in.
    Modules that need more override it with a fixture of the same name that requests this one."""
    harness_env(monkeypatch, tiny_models_dir, tmp_path / "cache")
    return tmp_path
