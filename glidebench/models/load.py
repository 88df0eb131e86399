"""Loading a :class:`~.plan.ModelPlan`: the generators (:func:`load_models`) and the evaluator CLIP of the CLIP
score (:func:`load_eval_clip`). Each role's source loads itself; this module only assembles the results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch

from glide.fast import FastPath
from glide.nn import set_attention_impl
from glide.pipeline import GlidePipeline

from .plan import ModelPlan
from .registry import ModelUnavailable
from .sources import EvalClipSource


@dataclass
class LoadedModels:
    """The generators of a plan, loaded: base, optional upsampler, optional noised CLIP."""

    plan: ModelPlan
    base: torch.nn.Module
    upsampler: torch.nn.Module | None
    noised_clip: torch.nn.Module | None

    def pipeline(self, device: torch.device, dtype: str, fast: bool = False, attention: str = "sdpa") -> Any:
        """A glide.pipeline.GlidePipeline over the loaded models (on glide's fast path when ``fast``)."""

        path = FastPath(attention=attention) if fast else None
        return GlidePipeline(
            self.base, self.upsampler, self.noised_clip, dtype=dtype, device=device, fast=path
        )


def load_models(
    plan: ModelPlan, device: torch.device | str, dtype: str, attention: str = "einsum"
) -> LoadedModels:
    """Load the generators of ``plan`` (base, upsampler, noised CLIP) onto ``device``, with the attention
    kernel ``attention`` ("einsum": the official numerics; "sdpa": PyTorch's fused kernel)."""

    device = torch.device(device)
    fp16 = dtype == "fp16"
    sources = plan.sources
    base = sources["base"].load(device, fp16=fp16)
    up = sources["upsample"].load(device, fp16=fp16) if "upsample" in sources else None
    clip = sources["noised-clip"].load(device) if "noised-clip" in sources else None
    for model in (base, up, clip):
        if model is not None:
            set_attention_impl(model, attention)
    return LoadedModels(plan, base, up, clip)


def load_eval_clip(plan: ModelPlan, device: torch.device | str) -> tuple[Any | None, str | None]:
    """(embedder, None), or (None, warning) when the CLIP score cannot be computed (model absent/offline).
    Loaded once per plan and device (the feature pass and the metric stage ask for it)."""
    key = ("eval-clip", str(torch.device(device)))
    if key not in plan.loaded:
        plan.loaded[key] = _load_eval_clip(plan, device)
    return plan.loaded[key]


def _load_eval_clip(plan: ModelPlan, device: torch.device | str) -> tuple[Any | None, str | None]:
    source = plan.sources.get("eval-clip")
    if source is None:
        return (
            None,
            "CLIP score skipped: no evaluator CLIP for this model family (see `glidebench ls models`)",
        )
    try:
        return cast(EvalClipSource, source).embedder(torch.device(device)), None
    except ModelUnavailable as e:  # open_clip offline with nothing cached
        return None, f"CLIP score skipped: {e}"
