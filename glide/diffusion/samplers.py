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
- ``plms``: pseudo linear multistep (Liu et al. 2022, PNDM): Adams-Bashforth combinations of up to four past
  eps on DDIM's update; the first step uses a pseudo improved-Euler (one extra model evaluation).
- ``dpm++2m``: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), the multistep second-order solver in the data
  (x_0) parameterisation, with thresholding of x_0 for pixel space (static clip to [-1, 1], or Imagen's
  dynamic thresholding) and first order on the last step.
- ``dpm++2m-sde``: the stochastic DPM-Solver++(2M) (Lu et al. 2022; the SDE form of k-diffusion's
  ``sample_dpmpp_2m_sde``, midpoint variant, eta = 1): the same data-prediction multistep update on the
  reverse SDE, which re-injects fresh noise every step like ancestral sampling. The noise lets later steps
  correct an imperfect model's errors, which the ODE solvers carry to the end.
The ODE samplers use eps only (the learned variance is ignored); ``cond_fn`` conditions eps as in DDIM.
"""

from __future__ import annotations

import math
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
        noise = torch.stack(rows)
        if x.device.type == "cuda" and noise.device.type == "cpu":
            # pinned + non_blocking: the copy is queued on the stream; a pageable copy would make the host
            # wait for the GPU at every step (same bits either way)
            return noise.pin_memory().to(device=x.device, dtype=x.dtype, non_blocking=True)
        return noise.to(device=x.device, dtype=x.dtype)

    return noise_fn


def make_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per sample (CPU generators give identical streams on every device)."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _steps(diffusion: GaussianDiffusion, x_T: torch.Tensor, progress: bool, desc: str):
    """(i, t) from the noisiest respaced index down to 0, with t the batch's index tensor."""
    indices = list(range(diffusion.num_timesteps))[::-1]
    for i in tqdm(indices, desc=desc, leave=False) if progress else indices:
        yield i, torch.full((x_T.shape[0],), i, device=x_T.device, dtype=torch.long)


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
    for _, t in _steps(diffusion, x_T, progress, "ancestral"):
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
    for _, t in _steps(diffusion, x_T, progress, "ddim"):
        with torch.no_grad():
            out = ddim_step(
                diffusion, model, img, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, eta, noise_fn
            )
        yield out
        img = out["sample"]


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Imagen's dynamic thresholding: s = max(1, quantile(|x0|)); clip to [-s, s], divide by s (per sample)."""
    s = torch.quantile(x0.abs().reshape(x0.shape[0], -1).float(), percentile, dim=1).clamp(min=1.0)
    s = s.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return x0.clamp(-s, s) / s


def _eps_x0(diffusion, model, x, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, threshold=None):
    """eps and x_0 at (x_t, t), conditioned and thresholded; eps is made consistent with the final x_0."""
    out = diffusion.p_mean_variance(model, x, t, False, None, model_kwargs)
    eps = out["eps"]
    if cond_fn is not None:
        alpha_bar = extract(diffusion.alphas_cumprod, t, x.shape)
        eps = eps - (1 - alpha_bar).sqrt() * cond_fn(x, diffusion._model_timesteps(t), **(model_kwargs or {}))
    x0 = diffusion._predict_xstart_from_eps(x, t, eps)
    if denoised_fn is not None:
        x0 = denoised_fn(x0)
    if threshold == "dynamic":
        x0 = dynamic_threshold(x0)
    elif clip_denoised:
        x0 = x0.clamp(-1, 1)
    return diffusion._predict_eps_from_xstart(x, t, x0), x0


def _ddim_from_eps(diffusion, x, t, eps, x0):
    alpha_bar_prev = extract(diffusion.alphas_cumprod_prev, t, x.shape)
    return x0 * alpha_bar_prev.sqrt() + (1 - alpha_bar_prev).sqrt() * eps


def plms(
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
    """PLMS (PNDM's pseudo linear multistep on the DDIM update); deterministic, noise_fn unused."""
    img, old_eps = x_T, []
    args = (clip_denoised, denoised_fn, cond_fn, model_kwargs)
    for i, t in _steps(diffusion, x_T, progress, "plms"):
        with torch.no_grad():
            eps, x0 = _eps_x0(diffusion, model, img, t, *args)
            if not old_eps:
                if i > 0:  # pseudo improved Euler: average with eps at the DDIM-predicted next point
                    x_next = _ddim_from_eps(diffusion, img, t, eps, x0)
                    eps_next, _ = _eps_x0(diffusion, model, x_next, t - 1, *args)
                    eps_prime = (eps + eps_next) / 2
                else:
                    eps_prime = eps
            elif len(old_eps) == 1:
                eps_prime = (3 * eps - old_eps[-1]) / 2
            elif len(old_eps) == 2:
                eps_prime = (23 * eps - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
            else:
                eps_prime = (55 * eps - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
            x0_prime = diffusion._predict_xstart_from_eps(img, t, eps_prime)
            if denoised_fn is not None:
                x0_prime = denoised_fn(x0_prime)
            if clip_denoised:
                x0_prime = x0_prime.clamp(-1, 1)
            eps_prime = diffusion._predict_eps_from_xstart(img, t, x0_prime)
            sample = _ddim_from_eps(diffusion, img, t, eps_prime, x0_prime)
        old_eps = (old_eps + [eps])[-3:]
        yield {"sample": sample, "pred_xstart": x0_prime}
        img = sample


def _check_threshold(threshold: str | None) -> None:
    if threshold not in (None, "static", "dynamic"):
        raise ValueError("threshold must be None, 'static' or 'dynamic'")


def _data_prediction(diffusion, model, x, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, threshold):
    """The DPM-Solver++ data prediction x0 at (x_t, t): conditioned, then thresholded (threshold None = none)."""
    args = (clip_denoised and threshold is not None, denoised_fn, cond_fn, model_kwargs, threshold)
    return _eps_x0(diffusion, model, x, t, *args)[1]


def dpm_solver_pp_2m(
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
    threshold: str | None = "static",
) -> Iterator[dict[str, torch.Tensor]]:
    """DPM-Solver++(2M) over the (respaced) discrete timesteps; deterministic, noise_fn unused.

    lambda_t = log(alpha_t / sigma_t) with alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t); each step
    x_{t_i} = (sigma_i / sigma_{i-1}) x - alpha_i (e^{-h_i} - 1) D_i, with D_i = x0_i (first step, last
    step) or (1 + 1/(2 r)) x0_i - 1/(2 r) x0_{i-1}, r = h_{i-1} / h_i.
    """
    _check_threshold(threshold)
    abar = torch.from_numpy(diffusion.alphas_cumprod)
    img, x0_prev, h_prev = x_T, None, None
    for i, t in _steps(diffusion, x_T, progress, "dpm++2m"):
        with torch.no_grad():
            x0 = _data_prediction(
                diffusion, model, img, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, threshold
            )
            if i == 0:  # to abar = 1: the solution is the data prediction itself
                sample = x0
            else:
                a_s, a_n = abar[i].item(), abar[i - 1].item()
                lam_s = 0.5 * (torch.log(torch.tensor(a_s)) - torch.log1p(torch.tensor(-a_s)))
                lam_n = 0.5 * (torch.log(torch.tensor(a_n)) - torch.log1p(torch.tensor(-a_n)))
                h = (lam_n - lam_s).item()
                if x0_prev is None or i == 1:
                    d = x0
                else:
                    r = h_prev / h
                    d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
                sigma_ratio = ((1 - a_n) / (1 - a_s)) ** 0.5
                sample = sigma_ratio * img - (a_n**0.5) * torch.expm1(torch.tensor(-h)).item() * d
                h_prev = h
        x0_prev = x0
        yield {"sample": sample, "pred_xstart": x0}
        img = sample


def _half_lambda(abar: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 * (log abar - log(1 - abar))."""
    return 0.5 * (math.log(abar) - math.log1p(-abar))


def dpm_solver_pp_2m_sde(
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
    threshold: str | None = "static",
    eta: float = 1.0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Stochastic DPM-Solver++(2M) (midpoint form) over the (respaced) discrete timesteps.

    With h = lambda_next - lambda_s and eta = 1, one step is
    x_next = (sigma_n / sigma_s) e^{-h} x + alpha_n (1 - e^{-2h}) x0 + alpha_n (1 - e^{-2h}) / (2 r) (x0 - x0_prev)
    + sigma_n sqrt(1 - e^{-2h}) z (r = h_prev / h; the correction term from the second step on), the VP form of
    k-diffusion's ``sample_dpmpp_2m_sde``. ``eta`` = 0 gives back the deterministic DPM-Solver++(2M) update
    with a midpoint correction. The last step (to abar = 1) returns the data prediction, as dpm++2m does.
    """
    _check_threshold(threshold)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    noise_fn = noise_fn or torch.randn_like
    abar = diffusion.alphas_cumprod
    img, x0_prev, h_prev = x_T, None, None
    for i, t in _steps(diffusion, x_T, progress, "dpm++2m-sde"):
        with torch.no_grad():
            x0 = _data_prediction(
                diffusion, model, img, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, threshold
            )
            if i == 0:
                sample = x0
            else:
                a_s, a_n = float(abar[i]), float(abar[i - 1])
                h = _half_lambda(a_n) - _half_lambda(a_s)
                eta_h = eta * h
                sigma_ratio = ((1 - a_n) / (1 - a_s)) ** 0.5
                c = -math.expm1(-h - eta_h)  # 1 - e^{-(1 + eta) h}
                sample = sigma_ratio * math.exp(-eta_h) * img + a_n**0.5 * c * x0
                if x0_prev is not None and i > 1:
                    sample = sample + a_n**0.5 * 0.5 * c * (h / h_prev) * (x0 - x0_prev)
                if eta > 0:
                    sample = sample + (1 - a_n) ** 0.5 * math.sqrt(-math.expm1(-2 * eta_h)) * noise_fn(img)
                h_prev = h
        x0_prev = x0
        yield {"sample": sample, "pred_xstart": x0}
        img = sample


SAMPLERS: dict[str, Callable[..., Iterator[dict[str, torch.Tensor]]]] = {
    "ancestral": ancestral,
    "ddim": ddim,
    "plms": plms,
    "dpm++2m": dpm_solver_pp_2m,
    "dpm++2m-sde": dpm_solver_pp_2m_sde,
}


def model_evals_per_step(sampler: str, num_steps: int) -> float:
    """Model evaluations per image and per guidance branch (PLMS's first step costs two)."""
    return (num_steps + 1) / num_steps if sampler == "plms" and num_steps > 1 else 1.0


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
