"""Gaussian diffusion with eps prediction and learned-range variance (GLIDE's simplified process).

Notation follows Ho et al. 2020 and Nichol & Dhariwal 2021 (Improved DDPM): ``q_sample`` is eq. (4),
the posterior q(x_{t-1} | x_t, x_0) eqs. (6-7), and the learned-range variance
log sigma^2 = frac log beta_t + (1 - frac) log beta~_t with frac = (v + 1) / 2 (IDDPM eq. 15).
Schedule arrays are float64 numpy; they are indexed and cast to float32 before meeting tensors, as the
official code does. ``SpacedDiffusion`` (respacing) keeps a subset of timesteps and hands the model (and
any cond_fn) the original-scale timestep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from .schedules import get_named_beta_schedule, space_timesteps

ModelFn = Callable[..., torch.Tensor]


def extract(arr: np.ndarray, t: torch.Tensor, broadcast_shape: torch.Size) -> torch.Tensor:
    """arr[t] as float32, broadcast to ``broadcast_shape``."""
    res = torch.from_numpy(arr).to(device=t.device)[t].float()
    while res.dim() < len(broadcast_shape):
        res = res[..., None]
    return res.expand(broadcast_shape)


class GaussianDiffusion:
    """The diffusion process for a model predicting [eps, v] (6 channels for RGB)."""

    def __init__(self, betas: np.ndarray) -> None:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.betas = betas
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # posterior_variance[0] is 0: clip the log with the next value.
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        )
        self.timestep_map = np.arange(self.num_timesteps)
        self.original_num_steps = self.num_timesteps

    # -- forward process -------------------------------------------------------------------------------
    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor):
        mean = extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
        variance = extract(1.0 - self.alphas_cumprod, t, x_start.shape)
        log_variance = extract(self.log_one_minus_alphas_cumprod, t, x_start.shape)
        return mean, variance, log_variance

    def q_sample(
        self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_t = sqrt(alphas_cumprod) x_start + sqrt(1 - alphas_cumprod) eps."""
        if noise is None:
            noise = torch.randn_like(x_start)
        return (
            extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
            + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise
        )

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        mean = (
            extract(self.posterior_mean_coef1, t, x_t.shape) * x_start
            + extract(self.posterior_mean_coef2, t, x_t.shape) * x_t
        )
        variance = extract(self.posterior_variance, t, x_t.shape)
        log_variance = extract(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance

    # -- reverse process -------------------------------------------------------------------------------
    def _model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Respaced index -> the original-scale timestep the model and cond_fn see (no rescaling)."""
        return torch.as_tensor(self.timestep_map, device=t.device, dtype=t.dtype)[t]

    def model_output(
        self, model: ModelFn, x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any
    ) -> torch.Tensor:
        return model(x, self._model_timesteps(t), **model_kwargs)

    def p_mean_variance(
        self,
        model: ModelFn,
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        model_out: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t): mean, variance, log_variance, pred_xstart (and the raw eps)."""
        c = x.shape[1]
        if model_out is None:
            model_out = self.model_output(model, x, t, **(model_kwargs or {}))
        if model_out.shape[1] != 2 * c:
            raise ValueError(f"model output has {model_out.shape[1]} channels, expected {2 * c} (eps and v)")
        eps, var_values = torch.split(model_out, c, dim=1)
        min_log = extract(self.posterior_log_variance_clipped, t, x.shape)
        max_log = extract(np.log(self.betas), t, x.shape)
        frac = (var_values + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = self._predict_xstart_from_eps(x, t, eps)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": mean,
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
        }

    def _predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (
            extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
            - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps
        )

    def _predict_eps_from_xstart(
        self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor
    ) -> torch.Tensor:
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart) / extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t.shape
        )

    def condition_mean(self, cond_fn, p_mean_var, x, t, model_kwargs=None) -> torch.Tensor:
        """Sohl-Dickstein et al. 2015 / Dhariwal & Nichol 2021: mean + sigma^2 * grad log p(y | x_t)."""
        gradient = cond_fn(x, self._model_timesteps(t), **(model_kwargs or {}))
        return p_mean_var["mean"].float() + p_mean_var["variance"] * gradient.float()

    def condition_score(self, cond_fn, p_mean_var, x, t, model_kwargs=None) -> dict[str, torch.Tensor]:
        """Song et al. 2020 score conditioning: eps <- eps - sqrt(1 - alphas_cumprod) * grad (used by DDIM)."""
        alpha_bar = extract(self.alphas_cumprod, t, x.shape)
        eps = self._predict_eps_from_xstart(x, t, p_mean_var["pred_xstart"])
        eps = eps - (1 - alpha_bar).sqrt() * cond_fn(x, self._model_timesteps(t), **(model_kwargs or {}))
        out = dict(p_mean_var)
        out["pred_xstart"] = self._predict_xstart_from_eps(x, t, eps)
        out["mean"], _, _ = self.q_posterior_mean_variance(out["pred_xstart"], x, t)
        return out


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion that keeps only ``use_timesteps`` of a base process (beta_j = 1 - abar_j / abar_{j-1})."""

    def __init__(self, use_timesteps: Iterable[int], betas: np.ndarray) -> None:
        use = set(use_timesteps)
        base = GaussianDiffusion(betas)
        last, new_betas, timestep_map = 1.0, [], []
        for i, alpha_cumprod in enumerate(base.alphas_cumprod):
            if i in use:
                new_betas.append(1 - alpha_cumprod / last)
                last = alpha_cumprod
                timestep_map.append(i)
        super().__init__(np.array(new_betas))
        self.use_timesteps = use
        self.timestep_map = np.array(timestep_map, dtype=np.int64)
        self.original_num_steps = len(betas)


def create_gaussian_diffusion(
    steps: int = 1000,
    noise_schedule: str = "squaredcos_cap_v2",
    timestep_respacing: str = "",
    cls: type[SpacedDiffusion] = SpacedDiffusion,
) -> SpacedDiffusion:
    """The official factory: a schedule by name, respaced by ``timestep_respacing`` ('' keeps all steps)."""
    betas = get_named_beta_schedule(noise_schedule, steps)
    return cls(space_timesteps(steps, timestep_respacing or [steps]), betas)
