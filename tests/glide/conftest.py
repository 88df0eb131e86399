"""Fixtures of the glide tests (the reference data's fixtures are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from .helpers import build


@pytest.fixture(scope="module")
def base(golden, golden_meta, gpt2_dir):
    """The official base model's small random configuration, loaded with its golden state dict."""
    return build(golden, golden_meta, gpt2_dir, "sd/")
