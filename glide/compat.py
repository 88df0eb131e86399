"""Drop-in names of glide-text2im's public API, for code written against the official notebooks.

from glide.compat import create_model_and_diffusion, model_and_diffusion_defaults, create_clip_model
options = model_and_diffusion_defaults(); options["timestep_respacing"] = "100"
model, diffusion = create_model_and_diffusion(**options)
model.load_state_dict(load_checkpoint("base", "cpu"))
samples = diffusion.p_sample_loop(model_fn, shape, device="cpu", model_kwargs=..., cond_fn=...)
"""

from __future__ import annotations

from typing import Any

import torch

from .checkpoints import (
    OFFICIAL,
    CheckpointError,
    cached_path,
    check_official_state_dict,
    how_to_get,
    load_state_dict,
    record_sha256,
    verify,
)
from .clip.model import create_clip_model
from .config import ModelConfig, model_and_diffusion_defaults, model_and_diffusion_defaults_upsampler
from .diffusion import samplers
from .diffusion.gaussian import SpacedDiffusion, create_gaussian_diffusion
from .unet import create_model

__all__ = [
    "create_model_and_diffusion",
    "model_and_diffusion_defaults",
    "model_and_diffusion_defaults_upsampler",
    "create_clip_model",
    "load_checkpoint",
]


class CompatDiffusion(SpacedDiffusion):
    """A SpacedDiffusion with the official loop methods (p_sample_loop, ddim_sample_loop, ...)."""

    def _progressive(self, sampler: str, model, shape, noise=None, device=None, **kwargs: Any):
        x_T = noise if noise is not None else torch.randn(*shape, device=device)
        return samplers.get_sampler(sampler)(self, model, x_T, **kwargs)

    def p_sample_loop_progressive(self, model, shape, **kwargs: Any):
        return self._progressive("ancestral", model, shape, **kwargs)

    def ddim_sample_loop_progressive(self, model, shape, **kwargs: Any):
        return self._progressive("ddim", model, shape, **kwargs)

    def p_sample_loop(self, model, shape, **kwargs: Any) -> torch.Tensor:
        return _last(self.p_sample_loop_progressive(model, shape, **kwargs))

    def ddim_sample_loop(self, model, shape, **kwargs: Any) -> torch.Tensor:
        return _last(self.ddim_sample_loop_progressive(model, shape, **kwargs))


def _last(steps) -> torch.Tensor:
    out = None
    for out in steps:  # noqa: B007
        pass
    return out["sample"]


def create_model_and_diffusion(**options: Any):
    """(model, diffusion) from the official options dict (unknown keys are errors)."""
    cfg = ModelConfig.from_dict(options)
    model = create_model(cfg.replace(use_fp16=False))
    model.dtype = torch.float16 if cfg.use_fp16 else torch.float32
    diffusion = create_gaussian_diffusion(
        cfg.diffusion_steps, cfg.noise_schedule, cfg.timestep_respacing, cls=CompatDiffusion
    )
    return model, diffusion


def load_checkpoint(checkpoint_name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The official checkpoint's state dict from the cache (download it with ``python -m glide download``)."""
    if checkpoint_name not in OFFICIAL:
        raise CheckpointError(f"unknown checkpoint {checkpoint_name!r}; known: {sorted(OFFICIAL)}")
    path = cached_path(checkpoint_name)
    if not path.exists():
        raise CheckpointError(how_to_get(checkpoint_name))
    digest = verify(path)
    sd, _ = load_state_dict(path)
    check_official_state_dict(checkpoint_name, sd, path)
    if not path.with_suffix(".sha256").exists():  # it loaded and is the right kind: record it as good
        record_sha256(path, digest)
    return {k: v.to(device) for k, v in sd.items()}
