"""Training losses: the Improved-DDPM hybrid objective GLIDE adopts, and CLIP's contrastive loss.

Hybrid loss (Nichol & Dhariwal 2021, section 3.1; GLIDE section 4): ``L_hybrid = L_simple + lambda * L_vlb``
with ``lambda = 0.001``.

- ``L_simple`` = ||eps - eps_theta(x_t, t)||^2 (mean over pixels, Ho et al. 2020 eq. 14).
- ``L_vlb`` is estimated with one uniformly drawn t, i.e. ``L_vlb ~= T * L_t`` (IDDPM eq. 4-6) where
  ``L_t = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` for t > 0 and ``L_0 = -log p(x_0 | x_1)`` (the
  discretized Gaussian decoder, Ho et al. eq. 13), both in bits per dimension. So the term added per sample
  is ``lambda * T * L_t`` (= ``L_t`` for the usual T = 1000, which is guided-diffusion's RESCALED_MSE
  ``vb * num_timesteps / 1000``).
- The VLB term sees a stop-gradient on eps (the "frozen mean"), so it trains only the variance output v.

Contrastive loss (Radford et al. 2021): symmetric InfoNCE over a batch of image/caption pairs; captions that
occur twice in a batch count as positives for each other (soft targets).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..diffusion.gaussian import GaussianDiffusion

LAMBDA_VLB = 0.001


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch one."""
    return x.mean(dim=list(range(1, x.dim())))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of the standard normal CDF (as guided-diffusion)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """log p(x) of images in [-1, 1] on 256 bins of width 2/255 under N(means, exp(log_scales)^2), in nats.

    The first and last bins extend to -inf and +inf, so the 256 probabilities sum to 1.
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(
            f"shapes differ: x {tuple(x.shape)}, means {tuple(means.shape)}, {tuple(log_scales.shape)}"
        )
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )


def vb_terms_bpd(
    diffusion: GaussianDiffusion,
    model_out: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """Per-sample L_t in bits/dim: KL(q || p) for t > 0 and the decoder NLL for t == 0 (no clipping)."""
    true_mean, _, true_log_var = diffusion.q_posterior_mean_variance(x_start, x_t, t)
    out = diffusion.p_mean_variance(None, x_t, t, clip_denoised=False, model_out=model_out)
    kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / np.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
    nll = mean_flat(nll) / np.log(2.0)
    return torch.where(t == 0, nll, kl)


def hybrid_loss(
    diffusion: GaussianDiffusion,
    model_out: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    lambda_vlb: float = LAMBDA_VLB,
) -> dict[str, torch.Tensor]:
    """Per-sample ``{"loss", "mse", "vb"}`` of L_simple + lambda * T * L_t (see the module docstring)."""
    c = x_start.shape[1]
    model_out = model_out.float()
    if model_out.shape[1] != 2 * c:
        raise ValueError(f"model output has {model_out.shape[1]} channels, expected {2 * c} (eps and v)")
    eps, v = model_out[:, :c], model_out[:, c:]
    mse = mean_flat((noise - eps) ** 2)
    if lambda_vlb:
        frozen = torch.cat([eps.detach(), v], dim=1)  # stop-gradient: the VLB trains only the variance
        vb = vb_terms_bpd(diffusion, frozen, x_start, x_t, t) * (lambda_vlb * diffusion.num_timesteps)
    else:
        vb = torch.zeros_like(mse)
    return {"loss": mse + vb, "mse": mse, "vb": vb}


def contrastive_loss(
    z_img: torch.Tensor,
    z_txt: torch.Tensor,
    logit_scale: torch.Tensor | float,
    captions: list[Any] | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over L2-normalised embeddings; identical captions are mutual positives."""
    logits = z_img @ z_txt.t() * (torch.exp(logit_scale) if torch.is_tensor(logit_scale) else logit_scale)
    n = logits.shape[0]
    if captions is None:
        target = torch.eye(n, device=logits.device)
    else:
        if len(captions) != n:
            raise ValueError(f"{len(captions)} captions for a batch of {n}")
        ids = {c: i for i, c in enumerate(captions)}
        keys = torch.tensor([ids[c] for c in captions], device=logits.device)
        target = (keys[:, None] == keys[None, :]).float()
    target = target / target.sum(dim=1, keepdim=True)
    loss_i = -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
    loss_t = -(target * F.log_softmax(logits.float().t(), dim=1)).sum(1).mean()
    return 0.5 * (loss_i + loss_t)
