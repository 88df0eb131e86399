"""Model and diffusion options for GLIDE (one frozen dataclass; official and tiny presets).

The field names and defaults follow glide-text2im's ``model_and_diffusion_defaults`` so that an official
options dict maps onto :class:`ModelConfig` one to one. Unknown keys are errors, never silently ignored.
The tokenizer is part of the config: official checkpoints use GPT-2 BPE; models trained by this project may
use another vocabulary (see :mod:`glide.tokenizer`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

_IMAGE_SIZE_MULT = {64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4)}
SCHEDULES = ("squaredcos_cap_v2", "linear")


@dataclass(frozen=True)
class ModelConfig:
    """Options of a GLIDE UNet and its diffusion process (official names)."""

    image_size: int = 64
    num_channels: int = 192
    num_res_blocks: int = 3
    channel_mult: str = ""
    num_heads: int = 1
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    attention_resolutions: str = "32,16,8"
    dropout: float = 0.1
    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True
    xf_padding: bool = True
    diffusion_steps: int = 1000
    noise_schedule: str = "squaredcos_cap_v2"
    timestep_respacing: str = ""
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_fp16: bool = False
    cache_text_emb: bool = False
    inpaint: bool = False
    super_res: bool = False
    # Not an official option: which tokenizer the model's token table is indexed by.
    tokenizer: dict[str, Any] = field(default_factory=lambda: {"kind": "gpt2"})

    def __post_init__(self) -> None:
        if self.noise_schedule not in SCHEDULES:
            raise ValueError(f"noise_schedule must be one of {SCHEDULES}, got {self.noise_schedule!r}")
        mult = self.resolved_channel_mult  # validates
        if any(self.num_channels * m % 32 for m in mult):
            raise ValueError(
                f"every level's channel count (num_channels x channel_mult = {self.num_channels} x {mult}) "
                "must be a multiple of 32 (GroupNorm uses 32 groups)"
            )
        for res in self.attention_resolutions.split(","):
            if res.strip() and self.image_size % int(res):
                raise ValueError(f"attention resolution {res} does not divide image_size {self.image_size}")
        if self.xf_width and self.xf_width % self.xf_heads:
            raise ValueError(f"xf_width {self.xf_width} must be divisible by xf_heads {self.xf_heads}")
        if not isinstance(self.tokenizer, dict) or "kind" not in self.tokenizer:
            raise ValueError("tokenizer must be a dict with a 'kind' key, e.g. {'kind': 'gpt2'}")

    @property
    def resolved_channel_mult(self) -> tuple[int, ...]:
        if self.channel_mult == "":
            if self.image_size not in _IMAGE_SIZE_MULT:
                raise ValueError(
                    f"channel_mult='' has no default for image_size {self.image_size}; give it explicitly"
                )
            return _IMAGE_SIZE_MULT[self.image_size]
        mult = tuple(int(m) for m in str(self.channel_mult).split(","))
        if 2 ** (len(mult) + 2) != self.image_size:
            raise ValueError(
                f"channel_mult {self.channel_mult!r} has {len(mult)} levels; GLIDE requires "
                f"2**(levels+2) == image_size ({self.image_size})"
            )
        return mult

    @property
    def attention_ds(self) -> tuple[int, ...]:
        """Attention resolutions turned into downsample factors, as the official code does."""
        return tuple(self.image_size // int(r) for r in self.attention_resolutions.split(",") if r.strip())

    @property
    def variant(self) -> str:
        return {
            (False, False): "base",
            (False, True): "upsample",
            (True, False): "base-inpaint",
            (True, True): "upsample-inpaint",
        }[(self.inpaint, self.super_res)]

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ValueError(f"unknown model option(s) {unknown}; valid options are {sorted(names)}")
        return cls(**options)


def model_and_diffusion_defaults() -> dict[str, Any]:
    """The official base-model options (glide-text2im), as a dict."""
    return {k: v for k, v in ModelConfig().to_dict().items() if k != "tokenizer"} | {"use_fp16": True}


def model_and_diffusion_defaults_upsampler() -> dict[str, Any]:
    """The official 64->256 upsampler options."""
    return model_and_diffusion_defaults() | {
        "image_size": 256,
        "num_res_blocks": 2,
        "noise_schedule": "linear",
        "super_res": True,
    }


PRESETS: dict[str, dict[str, Any]] = {
    "base": model_and_diffusion_defaults(),
    "upsample": model_and_diffusion_defaults_upsampler(),
    "base-inpaint": model_and_diffusion_defaults() | {"inpaint": True},
    "upsample-inpaint": model_and_diffusion_defaults_upsampler() | {"inpaint": True},
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """An official configuration by name ('base', 'upsample', 'base-inpaint', 'upsample-inpaint')."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig.from_dict(PRESETS[name] | overrides)
