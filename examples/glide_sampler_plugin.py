"""An example plug-in generator: the embedded GLIDE sampled with a sampler and step count of its own.

This is the documented example of glidebench's plug-in API (``glidebench.generators``). Run it from the
repository root (so that ``examples`` is importable)::

    glidebench run coco-fid --generator examples.glide_sampler_plugin:make --generator-args sampler=ddim,steps=25

The run keeps the protocol (captions, seeds, settings, references, resolution, metrics) and takes its images
from this generator, which samples the embedded GLIDE with DDIM and 25 steps whatever the run's ``--sampler``
and ``--steps`` say. ``glidebench report RUN_A RUN_B`` then compares it with a plain GLIDE run.

What a plug-in provides (see :class:`glidebench.generators.Generator`):

- a factory (here :func:`make`) called with the ``--generator-args`` as keyword arguments;
- ``name``: the results' ``model`` column (here ``embedded-ddim25``, or ``embedded-short-ddim25`` with the
  short-caption models);
- ``capabilities``: the guidance kinds, native resolution, dtypes and devices it supports (a run refuses an
  unsupported setting before any work);
- ``identity()``: what determines its images (recorded in the run's spec and fingerprint): here the GLIDE
  weights' SHA-256s plus the sampler and steps;
- ``describe(options)`` (optional): how it samples (sampler, steps, evaluations per image, what a guidance
  scale means, which of GLIDE's sampling options it reads): the run's header, results and report show it;
- ``generate(captions, seeds, setting, options)``: one image per caption, depending only on that caption, its
  seed, the setting and the options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from glidebench import models as M
from glidebench.generators import (
    Capabilities,
    Generator,
    GeneratorError,
    SamplingDescription,
    SamplingOptions,
)
from glidebench.generators.glide import GlideGenerator
from glidebench.spec import CAPTION_STYLES, SAMPLERS


class GlideSamplerGenerator(Generator):
    """The embedded GLIDE (a :class:`GlideGenerator` over the plan the runner would make) with its own sampler
    and steps. The weights are loaded on the first :meth:`generate`, on the run's device and dtype."""

    def __init__(self, plan: Any, sampler: str, steps: str) -> None:
        self.plan, self.sampler, self.steps = plan, sampler, steps
        self.name = f"{plan.label}-{sampler}{steps}"
        self._inner = GlideGenerator(plan, torch.device("cpu"), "fp32")  # device and dtype set on first use
        self.capabilities: Capabilities = self._inner.capabilities
        self.evals_per_image: dict[str, float] | None = None

    def identity(self) -> dict[str, str]:
        return dict(self.plan.identities) | {"sampler": self.sampler, "steps": self.steps}

    def describe(self, options: SamplingOptions) -> SamplingDescription:
        """How it samples: GLIDE's description with this generator's sampler and steps; it reads none of the
        run's GLIDE options (a run refuses --sampler, --steps, ... given with it)."""
        own = dataclasses.replace(options, sampler=self.sampler, steps=self.steps)
        return dataclasses.replace(self._inner.describe(own), model=self.name, reads=())

    def generate(
        self, captions: Sequence[str], seeds: Sequence[int], setting: Any, options: SamplingOptions
    ) -> torch.Tensor:
        if self._inner.loaded is None:
            self._inner.device, self._inner.dtype = torch.device(options.device), options.dtype
        own = dataclasses.replace(options, sampler=self.sampler, steps=self.steps)
        images = self._inner.generate(captions, seeds, setting, own)
        self.evals_per_image = self._inner.evals_per_image
        return images

    def close(self) -> None:
        self._inner.close()


def make(
    sampler: str = "ddim", steps: Any = "25", caption_style: str = "short", clip: Any = "auto"
) -> GlideSamplerGenerator:
    """The embedded GLIDE sampled with ``sampler`` and ``steps`` (a respacing: ``25``, ``ddim25``, ``quad20``).

    ``caption_style`` picks the embedded models as the run does (``short``: the short-caption models of
    coco-fid's default profile where they exist; use ``exact`` with ``--caption-style exact``). ``clip``:
    ``auto`` declares CLIP guidance when a trained noised CLIP is present, ``false`` never.
    """
    from glide.diffusion.schedules import space_timesteps

    sampler, steps = str(sampler), str(steps)
    if sampler not in SAMPLERS:
        raise GeneratorError(f"sampler={sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if caption_style not in CAPTION_STYLES:
        raise GeneratorError(f"caption_style={caption_style!r}: choose one of {', '.join(CAPTION_STYLES)}")
    if clip not in ("auto", True, False):
        raise GeneratorError(f"clip={clip!r}: give auto, true or false")
    files = M.embedded_files(caption_style=caption_style)
    want_clip = clip is True or (clip == "auto" and "noised-clip" in files and "base" in files)
    plan = M.plan_models("embedded", None, want_clip, data="embedded", caption_style=caption_style)
    t = plan.configs["base"].diffusion_steps
    try:
        kept = space_timesteps(t, steps)
    except (ValueError, ZeroDivisionError) as e:
        raise GeneratorError(f"steps={steps!r} cannot respace the model's {t} diffusion steps: {e}") from None
    if not kept:
        raise GeneratorError(f"steps={steps!r} keeps no step; give at least 1 (e.g. 25, ddim25, quad20)")
    return GlideSamplerGenerator(plan, sampler, steps)
