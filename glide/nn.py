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
GROUPNORM_MODES = ("two-pass", "nchw", "native")  # GroupNorm32.channels_last_mode


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in fp32.

    ``channels_last_mode`` (set by glide.fast on channels-last models) says how a channels-last input is
    normalised. PyTorch's own channels-last kernel ("native") accumulates its statistics less accurately than
    its NCHW kernel (the golden base model's forward moves by 1.4e-5; see glide.fast), so there are two exact
    alternatives:

    - "two-pass": the mean, then the variance of the centred values, each a reduction over the
      channels-last tensor, and one ``addcmul`` for the affine tail; the result stays channels-last. Within
      float rounding of the NCHW kernel (about 2e-6 on unit-scale activations) at 1-3x the native kernel's
      time.
    - "nchw": the NCHW kernel on an NCHW copy, copied back to channels-last (exact, 3-9x the native time).

    NCHW inputs always take PyTorch's kernel, as in the official code.
    """

    channels_last_mode = "native"

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def _mode(self, x: torch.Tensor) -> str:
        """How ``x`` is normalised: ``channels_last_mode`` for a channels-last (non-contiguous 4-D) input."""
        return self.channels_last_mode if x.ndim == 4 and not x.is_contiguous() else "native"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self._mode(x)
        if mode == "two-pass":
            return self._two_pass(x.float()).type(x.dtype)
        if mode == "nchw":
            y = super().forward(x.float().contiguous()).type(x.dtype)
            return y.contiguous(memory_format=torch.channels_last)
        return super().forward(x.float()).type(x.dtype)

    def scale_shift(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``self(x) * (1 + scale) + shift`` (a ResBlock's scale-shift norm; scale, shift: [N, C, 1, 1]).

        The official operations, except on the "two-pass" channels-last path, where the affine tail, the
        scale and the shift are folded into one ``addcmul`` (one pass over the activations instead of three;
        equal within float rounding)."""
        if self._mode(x) == "two-pass":
            gain = 1 + scale.float()
            return self._two_pass(x.float(), gain, shift.float()).type(x.dtype)
        return self(x) * (1 + scale) + shift

    def _two_pass(
        self, x: torch.Tensor, gain: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        """GroupNorm of channels-last ``x`` (then ``* gain + shift``, each [N, C, 1, 1], when given)."""
        n, c = x.shape[:2]
        per_group = c // self.num_groups
        # every channel of a group has H*W values, so the group's mean is the mean of its channels' means
        mean = x.mean(dim=(2, 3)).view(n, self.num_groups, per_group).mean(-1)
        centred = x - mean.repeat_interleave(per_group, 1)[:, :, None, None]
        var = (centred * centred).mean(dim=(2, 3)).view(n, self.num_groups, per_group).mean(-1)
        rstd = torch.rsqrt(var + self.eps).repeat_interleave(per_group, 1)[:, :, None, None]  # [N, C, 1, 1]
        a, b = rstd * self.weight[:, None, None], self.bias[:, None, None]  # GroupNorm32 is always affine
        if gain is not None:
            a, b = a * gain, b * gain
        if shift is not None:
            b = b + shift
        return torch.addcmul(b, centred, a)


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
