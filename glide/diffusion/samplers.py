"""Samplers over a :class:`~glide.diffusion.gaussian.GaussianDiffusion` (respaced or not).

Each sampler is a generator function with one shared signature::

    sampler(diffusion, model, x_T, *, clip_denoised, denoised_fn, cond_fn, model_kwargs, noise_fn, progress)

yielding ``{"sample": x_{t-1}, "pred_xstart": ...}`` after every step, so callers can keep every step
(golden tests), the last one (:func:`sample_loop`), or stop early. Randomness goes through ``noise_fn``
(``randn_like``-shaped); :func:`per_sample_noise` gives each batch row its own ``torch.Generator`` so a
sample never depends on the batch it was drawn in.

- ``ancestral``: p_sample (Ho et al. 2020) with the learned variance; ``cond_fn`` shifts the mean by
  sigma^2 * grad (condition_mean). The noise is drawn before cond_fn runs, as in the official code.
- ``ddim``: Song et al. 2021 eq. 12 with ``eta``; ``cond_fn`` conditions the score (condition_score).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .gaussian import GaussianDiffusion, extract

NoiseFn = Callable[[torch.Tensor], torch.Tensor]


def per_sample_noise(generators: Sequence[torch.Generator]) -> NoiseFn:
    """A ``randn_like`` whose row i is drawn from ``generators[i]`` (independent of batch composition)."""

    def noise_fn(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(generators):
            raise ValueError(f"batch of {x.shape[0]} rows but {len(generators)} generators")
        rows = [
            torch.randn(x.shape[1:], generator=g, dtype=torch.float32, device=g.device) for g in generators
        ]
        return torch.stack(rows).to(device=x.device, dtype=x.dtype)

    return noise_fn


def make_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per sample (CPU generators give identical streams on every device)."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _steps(diffusion: GaussianDiffusion, progress: bool, desc: str) -> Iterator[int]:
    indices = list(range(diffusion.num_timesteps))[::-1]
    return iter(tqdm(indices, desc=desc, leave=False) if progress else indices)


def _nonzero(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (t != 0).float().view(-1, *([1] * (x.dim() - 1)))


def p_sample(
    diffusion: GaussianDiffusion,
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    clip_denoised: bool = True,
    denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    cond_fn: Callable[..., torch.Tensor] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    noise_fn: NoiseFn | None = None,
) -> dict[str, torch.Tensor]:
    """One ancestral step x_t -> x_{t-1} (t is the respaced index)."""
    out = diffusion.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
    noise = (noise_fn or torch.randn_like)(x)
    if cond_fn is not None:
        out["mean"] = diffusion.condition_mean(cond_fn, out, x, t, model_kwargs)
    sample = out["mean"] + _nonzero(t, x) * torch.exp(0.5 * out["log_variance"]) * noise
    return {"sample": sample, "pred_xstart": out["pred_xstart"]}


def ancestral(
    diffusion: GaussianDiffusion,
    model: Callable[..., torch.Tensor],
    x_T: torch.Tensor,
    *,
    clip_denoised: bool = True,
    denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    cond_fn: Callable[..., torch.Tensor] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    noise_fn: NoiseFn | None = None,
    progress: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """p_sample_loop_progressive: from x_T down to x_0, yielding each step."""
    img = x_T
    for i in _steps(diffusion, progress, "ancestral"):
        t = torch.full((x_T.shape[0],), i, device=x_T.device, dtype=torch.long)
        with torch.no_grad():
            out = p_sample(
                diffusion, model, img, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, noise_fn
            )
        yield out
        img = out["sample"]


def ddim_step(
    diffusion: GaussianDiffusion,
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    clip_denoised: bool = True,
    denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    cond_fn: Callable[..., torch.Tensor] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    eta: float = 0.0,
    noise_fn: NoiseFn | None = None,
) -> dict[str, torch.Tensor]:
    """One DDIM step (Song et al. 2021, eq. 12); eta = 0 is deterministic."""
    out = diffusion.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
    if cond_fn is not None:
        out = diffusion.condition_score(cond_fn, out, x, t, model_kwargs)
    eps = diffusion._predict_eps_from_xstart(x, t, out["pred_xstart"])
    alpha_bar = extract(diffusion.alphas_cumprod, t, x.shape)
    alpha_bar_prev = extract(diffusion.alphas_cumprod_prev, t, x.shape)
    sigma = (
        eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
    )
    noise = (noise_fn or torch.randn_like)(x)
    mean_pred = (
        out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
    )
    sample = mean_pred + _nonzero(t, x) * sigma * noise
    return {"sample": sample, "pred_xstart": out["pred_xstart"]}


def ddim(
    diffusion: GaussianDiffusion,
    model: Callable[..., torch.Tensor],
    x_T: torch.Tensor,
    *,
    clip_denoised: bool = True,
    denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    cond_fn: Callable[..., torch.Tensor] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    noise_fn: NoiseFn | None = None,
    progress: bool = False,
    eta: float = 0.0,
) -> Iterator[dict[str, torch.Tensor]]:
    """ddim_sample_loop_progressive."""
    img = x_T
    for i in _steps(diffusion, progress, "ddim"):
        t = torch.full((x_T.shape[0],), i, device=x_T.device, dtype=torch.long)
        with torch.no_grad():
            out = ddim_step(
                diffusion, model, img, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, eta, noise_fn
            )
        yield out
        img = out["sample"]


SAMPLERS: dict[str, Callable[..., Iterator[dict[str, torch.Tensor]]]] = {"ancestral": ancestral, "ddim": ddim}


def get_sampler(name: str) -> Callable[..., Iterator[dict[str, torch.Tensor]]]:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def sample_loop(
    sampler: str, diffusion: GaussianDiffusion, model, x_T: torch.Tensor, **kwargs: Any
) -> torch.Tensor:
    """Run a sampler to the end and return x_0."""
    out = None
    for step in get_sampler(sampler)(diffusion, model, x_T, **kwargs):
        out = step
    if out is None:
        raise ValueError("the diffusion has no steps")
    return out["sample"]
