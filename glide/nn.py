"""Shared layers of GLIDE's UNet and text transformer.

Norms compute in fp32 and cast back (as the official fp16 code does); attention scales q and k each by
d^(-1/4) and runs its softmax in fp32. ``attention`` has two numerically equivalent implementations: the
official einsum form and ``torch.nn.functional.scaled_dot_product_attention`` (faster, fused on GPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_IMPLS = ("einsum", "sdpa")


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in fp32.

    ``nchw_stats`` (set by glide.fast for channels-last models): a channels-last input is normalised on an NCHW
    copy and handed back channels-last, because PyTorch's channels-last GroupNorm kernel rounds differently
    (see glide.fast); off, the input's own layout is used.
    """

    nchw_stats = False

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nchw_stats and x.ndim == 4 and not x.is_contiguous():
            y = super().forward(x.float().contiguous()).type(x.dtype)
            return y.contiguous(memory_format=torch.channels_last)
        return super().forward(x.float()).type(x.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (eps 1e-5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos(t f), sin(t f)] with f_i = max_period^(-i/half) (cos first)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    impl: str = "einsum",
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the last two axes; q,k,v: [..., L, d] -> [..., Lq, d].

    ``einsum`` reproduces the official numerics (q and k each scaled by d^-1/4, fp32 softmax cast back);
    ``sdpa`` calls PyTorch's fused kernel, equal within float rounding.
    """
    d = q.shape[-1]
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    if impl != "einsum":
        raise ValueError(f"unknown attention implementation {impl!r}; use one of {ATTENTION_IMPLS}")
    scale = 1 / math.sqrt(math.sqrt(d))
    weight = torch.einsum("...tc,...sc->...ts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    return torch.einsum("...ts,...sc->...tc", weight, v)


def set_attention_impl(model: nn.Module, impl: str) -> nn.Module:
    """Switch every attention layer of ``model`` to ``impl`` ('einsum' or 'sdpa')."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {impl!r}; use one of {ATTENTION_IMPLS}")
    for m in model.modules():
        if hasattr(m, "attention_impl"):
            m.attention_impl = impl
    return model
