"""GLIDE's text transformer (glide_text2im/text2im_model.py + xf.py).

Pre-LN residual blocks with *no* attention mask (not causal; padding is attended to). ``c_qkv`` is laid
out grouped by head: the output is viewed as [B, T, heads, 3d] and split into q, k, v per head. GELU is the
exact erf form. Padding positions are *replaced* by a learned ``padding_embedding`` row (see
:class:`glide.unet.Text2ImUNet`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .nn import LayerNorm, attention


class MultiheadAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3)
        self.c_proj = nn.Linear(width, width)
        self.attention_impl = "einsum"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        d = width // self.heads
        qkv = self.c_qkv(x).view(b, n, self.heads, -1)  # grouped by head: [q_h | k_h | v_h]
        q, k, v = torch.split(qkv, d, dim=-1)  # [B, n, heads, d]
        if self.attention_impl == "einsum":  # the official layout, for bit-level parity
            scale = 1 / math.sqrt(math.sqrt(d))
            weight = torch.einsum("bthc,bshc->bhts", q * scale, k * scale)
            weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
            out = torch.einsum("bhts,bshc->bthc", weight, v)
        else:
            out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.attention_impl)
            out = out.transpose(1, 2)
        return self.c_proj(out.reshape(b, n, width))


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.c_proj = nn.Linear(width * 4, width)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = MLP(width)
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x
