"""The random-initialised fallback: the embedded architectures (recipes/embedded-*.json) built in memory.

While no trained embedded base exists, the embedded family is a seeded random model of the same architecture;
every zero-initialised output layer is filled with small seeded noise so that the text and the guidance scale
change the samples. Owns the configs, the identities (``random-init:ROLE:seed=S:config=DIGEST``, part of the
run's fingerprint) and the seeded builders :func:`random_unet` / :func:`random_clip`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from glide.clip import ClipConfig, create_clip_model
from glide.config import ModelConfig
from glide.unet import create_model

from ..data.embedded import vocabulary

RANDOM_SEED = 0


def _embedded_vocab() -> list[str]:

    return vocabulary()


def random_base_config() -> ModelConfig:
    """A small base architecture for the random-init fallback: 32 px, 32 channels, words tokenizer (the trained
    base, recipes/embedded-base.json, has 64 channels; this keeps the fallback cheap)."""
    return ModelConfig(
        image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2", num_head_channels=32,
        attention_resolutions="8,4", dropout=0.0, text_ctx=24, xf_width=128, xf_layers=2, xf_heads=4,
        diffusion_steps=1000, noise_schedule="squaredcos_cap_v2",
        tokenizer={"kind": "words", "vocab": _embedded_vocab()},
    )  # fmt: skip


def random_upsample_config() -> ModelConfig:
    """The embedded 32->64 upsampler architecture (recipes/embedded-upsample.json)."""
    return ModelConfig(
        image_size=64, num_channels=64, num_res_blocks=1, channel_mult="1,1,2,2", num_head_channels=32,
        attention_resolutions="8", dropout=0.0, text_ctx=24, xf_width=64, xf_layers=1, xf_heads=2,
        diffusion_steps=1000, noise_schedule="linear", super_res=True,
        tokenizer={"kind": "words", "vocab": _embedded_vocab()},
    )  # fmt: skip


def random_clip_config(image_size: int = 32) -> dict[str, Any]:
    """The embedded noised-CLIP architecture (recipes/embedded-clip-noised.json)."""
    return {
        "logit_scale": 30.0, "beta_schedule": "squaredcos_cap_v2", "n_timesteps": 1000, "image_size": image_size,
        "patch_size": 8, "n_vocab": 49408, "max_text_len": 32, "n_embd": 128, "n_head_state_text": 64,
        "n_head_text": 2, "n_xf_blocks_text": 2, "n_head_state_image": 64, "n_head_image": 2, "n_xf_blocks_image": 2,
    }  # fmt: skip


def _recipe_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def random_identity(role: str, config: ModelConfig | dict[str, Any], seed: int = RANDOM_SEED) -> str:
    """The identity of a random-initialised model: its role, seed and a digest of its config."""
    cfg = config.to_dict() if hasattr(config, "to_dict") else config
    return f"random-init:{role}:seed={seed}:config={_recipe_digest(cfg)}"


def _fill_zero_params(model: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Seeded small noise into every all-zero parameter (the zero-init output layers), in state-dict order."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.numel() and not bool(p.any()):
                p.copy_(torch.randn(p.shape, generator=g) * std)


def random_unet(config: ModelConfig, seed: int = RANDOM_SEED) -> torch.nn.Module:
    """A seeded random-initialised UNet of ``config`` (deterministic, independent of the global RNG)."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(config)
    _fill_zero_params(model, seed)
    return model.eval()


def random_clip(config: dict[str, Any], seed: int = RANDOM_SEED) -> torch.nn.Module:
    """A seeded random-initialised noised CLIP of ``config`` (a glide.clip.ClipConfig dict), on the CPU."""

    return create_clip_model(
        config=ClipConfig.from_dict(config), device="cpu", generator=torch.Generator().manual_seed(seed)
    ).eval()
