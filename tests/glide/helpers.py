"""Tiny configs and golden-data helpers shared by the glide tests (fixtures in conftest.py)."""

from __future__ import annotations

import numpy as np
import torch

from glide.config import ModelConfig
from glide.diffusion import samplers
from glide.diffusion.gaussian import create_gaussian_diffusion
from glide.diffusion.guidance import classifier_free_guidance
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


CONFIG_KEYS = {"sd/": "base (sd/)", "sd_up/": "upsample (sd_up/)", "sd_inpaint/": "inpaint (sd_inpaint/)"}


def T(golden, key: str) -> torch.Tensor:
    return torch.from_numpy(np.array(golden[key]))


def build(golden, golden_meta, gpt2_dir, prefix: str):
    options = dict(golden_meta["configs"][CONFIG_KEYS[prefix]])
    cfg = ModelConfig.from_dict(options | {"tokenizer": {"kind": "gpt2", "path": str(gpt2_dir)}})
    model = create_model(cfg)
    sd = {k[len(prefix) :]: T(golden, k) for k in golden.files if k.startswith(prefix)}
    model.load_state_dict(sd, strict=True)
    return model.eval()


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


def replay(noises: torch.Tensor):
    """A noise_fn that hands out the official run's recorded noises in order."""
    it = iter(noises)
    return lambda x: next(it).to(x)


def golden_cfg_run(model, golden):
    """The golden 10-step classifier-free run (ancestral, s = 3, the official noises) with ``model``:
    (diffusion, guided model_fn, the sampler's per-step outputs)."""
    d = create_gaussian_diffusion(1000, "squaredcos_cap_v2", "10")
    tokens, mask = T(golden, "cfg/tokens"), T(golden, "cfg/mask")
    model_fn = classifier_free_guidance(model, 3.0, {"tokens": tokens[1:], "mask": mask[1:]})
    with torch.no_grad():
        steps = list(
            samplers.ancestral(
                d,
                model_fn,
                T(golden, "cfg/init_noise"),
                model_kwargs={"tokens": tokens[:1], "mask": mask[:1]},
                noise_fn=replay(T(golden, "cfg/step_noise")),
            )
        )
    return d, model_fn, steps
