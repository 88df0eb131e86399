"""GLIDE (the official checkpoints or the embedded family) as a generator: the cascade of
:class:`glide.pipeline.GlidePipeline` over the models a :class:`glidebench.models.ModelPlan` names.

The weights are loaded on the first call to :meth:`GlideGenerator.generate` (a run that finds every image on
disk loads nothing). Its identity is the plan's (weights' SHA-256 or random-init recipes), so a run's
fingerprint is the one it had before generators existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..models import load_models
from .base import GLIDE_OPTIONS, Capabilities, Generator, SamplingDescription, SamplingOptions

CFG_MEANING = (
    "classifier-free: eps(uncond) + s (eps(cond) - eps(uncond)), s = 1 the conditional model alone; "
    "CLIP: the noised CLIP's gradient times s"
)


class GlideGenerator(Generator):
    """Text -> 64 px (-> upsampled) images with classifier-free or CLIP guidance (GLIDE, sec. 3)."""

    def __init__(
        self, plan: Any, device: torch.device, dtype: str, attention: str = "einsum", fast: bool = False
    ) -> None:
        self.plan, self.device, self.dtype, self.attention, self.fast = plan, device, dtype, attention, fast
        self.name = plan.label
        guidance = ("cfg", "none") + (("clip",) if plan.has_noised_clip else ())
        self.capabilities = Capabilities(
            guidance=guidance,
            resolution=plan.base_resolution,
            dtypes=("fp32", "fp16", "bf16"),
            devices=("cpu", "cuda", "mps"),
        )
        self.loaded: Any = None
        self._pipeline: Any = None
        self.evals_per_image: dict[str, float] | None = None

    def identity(self) -> dict[str, str]:
        return dict(self.plan.identities)

    def describe(self, options: SamplingOptions) -> SamplingDescription:
        evals = "steps x 2 with classifier-free guidance at s != 1 (inside --cfg-interval), else steps"
        if options.upsample:
            evals += f", + the upsampler's {options.up_sampler} {options.up_steps} steps"
        return SamplingDescription(
            self.name, options.sampler, options.steps, evals, CFG_MEANING, reads=tuple(GLIDE_OPTIONS)
        )

    def load(self) -> Any:
        """The loaded models (base, upsampler, noised CLIP), loading them on first use."""
        if self.loaded is None:
            self.loaded = load_models(self.plan, self.device, self.dtype, self.attention)
            self._pipeline = self.loaded.pipeline(
                self.device, self.dtype, fast=self.fast, attention=self.attention
            )
        return self.loaded

    def generate(
        self, captions: Sequence[str], seeds: Sequence[int], setting: Any, options: SamplingOptions
    ) -> torch.Tensor:
        self.load()
        images = self._pipeline.generate(
            list(captions),
            list(seeds),
            guidance=setting.guidance,
            scale=setting.scale,
            sampler=options.sampler,
            steps=options.steps,
            upsample=options.upsample,
            up_sampler=options.up_sampler,
            up_steps=options.up_steps,
            upsample_temp=options.upsample_temp,
            progress=options.progress,
            **(
                {"cfg_interval": options.cfg_interval}
                if options.cfg_interval and setting.guidance == "cfg"
                else {}
            ),
        )
        self.evals_per_image = dict(getattr(self._pipeline, "last_evals_per_image", {}) or {})
        return images

    def close(self) -> None:
        self.loaded = self._pipeline = None
