"""Classifier-free guidance and inpainting hooks (GLIDE sections 2.3 and 3.1).

Classifier-free guidance (Ho & Salimans 2021; GLIDE eq. 4): the model runs on [cond | uncond] in one batch,
eps_hat = eps_u + s (eps_c - eps_u). As in the official notebooks only eps is guided: the variance channels
are the conditional branch's own. The wrapper exposes a batch-B model (the sampler never sees the
unconditional half), which equals the official full-batch loop on the kept half.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def classifier_free_guidance(
    model: Callable[..., torch.Tensor],
    guidance_scale: float,
    uncond_kwargs: dict[str, Any],
    interval: tuple[int, int] | None = None,
) -> Callable[..., torch.Tensor]:
    """A model function (x_t, t, **cond_kwargs) -> [B, 6, H, W] with guided eps and conditional variance.

    ``uncond_kwargs`` hold the unconditional inputs (the empty prompt's tokens/mask or text_emb, and any
    image conditioning), each with the same batch size B as the conditional kwargs.

    ``interval`` = (lo, hi) applies guidance only at model timesteps lo <= t <= hi (the original 0..T-1
    scale) and runs the conditional model alone elsewhere: one evaluation instead of two. This is
    Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and Distribution
    Quality in Diffusion Models"; it is not GLIDE's guidance (None, the default, guides every step). Deciding
    reads t once per model call (one device sync per step; none when ``interval`` is None).
    """
    if interval is not None:
        lo, hi = (int(v) for v in interval)
        if not 0 <= lo <= hi:
            raise ValueError(f"guidance interval must be 0 <= lo <= hi, got {interval!r}")

    def model_fn(x_t: torch.Tensor, t: torch.Tensor, **cond_kwargs: Any) -> torch.Tensor:
        b = x_t.shape[0]
        if interval is not None:
            t_min, t_max = (int(v) for v in torch.aminmax(t))
            if t_min != t_max:
                raise ValueError(
                    "a guidance interval needs one timestep per model call (the samplers' batches)"
                )
            if not lo <= t_min <= hi:
                return model(x_t, t, **cond_kwargs)
        kwargs = {k: _cat(cond_kwargs[k], uncond_kwargs[k]) for k in cond_kwargs}
        out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), **kwargs)
        c = x_t.shape[1]
        eps, rest = out[:, :c], out[:, c:]
        cond_eps, uncond_eps = eps[:b], eps[b:]
        guided = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
        return torch.cat([guided, rest[:b]], dim=1)

    return model_fn


def _cat(a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        return tuple(torch.cat([x, y]) for x, y in zip(a, b))
    return torch.cat([a, b])


def inpaint_denoised_fn(image: torch.Tensor, mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Keep the known region on the predicted x_0 at every step: x0 (1 - m) + image m (m = 1 known)."""

    def denoised_fn(x_start: torch.Tensor) -> torch.Tensor:
        return x_start * (1 - mask) + image * mask

    return denoised_fn
