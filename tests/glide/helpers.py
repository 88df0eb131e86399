"""Tiny configs shared by the glide tests."""

from __future__ import annotations

import torch

from glide.config import ModelConfig
from glide.unet import create_model

WORDS = ["a", "red", "blue", "circle", "square", "on", "grey", "background"]


def tiny_config(**overrides) -> ModelConfig:
    base = dict(
        image_size=32,
        num_channels=32,
        num_res_blocks=1,
        channel_mult="1,2,2",
        num_head_channels=16,
        attention_resolutions="8",
        xf_width=32,
        xf_layers=1,
        xf_heads=2,
        text_ctx=12,
        dropout=0.0,
        tokenizer={"kind": "words", "vocab": WORDS},
    )
    return ModelConfig.from_dict(base | overrides)


def tiny_model(seed: int = 0, **overrides):
    """A tiny model with every parameter randomised (zero-inits too, so outputs are not trivially 0)."""
    model = create_model(tiny_config(**overrides))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()
