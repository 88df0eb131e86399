"""The ADM-style UNet with text attention, and GLIDE's four model variants.

Follows glide_text2im/unet.py and text2im_model.py: scale-shift ResBlocks (scale first), up/down ResBlocks
that resample after GN+SiLU and before the first conv (nearest x2 / 2x2 average pool), attention blocks
that prepend the text keys/values (``encoder_kv``) to the image keys/values under one softmax, and a
6-channel output (eps, then the learned-range variance interpolation v).

Variants (same torso, different input channels):
  Text2ImUNet (3), SuperResText2ImUNet (6: x_t, up(low_res)), InpaintText2ImUNet (7: x_t, image*mask, mask),
  SuperResInpaintText2ImUNet (10: x_t, image*mask, mask, up(low_res)).
State-dict names, order and shapes equal the official checkpoints'.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .nn import GroupNorm32, LayerNorm, attention, timestep_embedding, zero_module
from .text import Transformer


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep(+text) embedding as a second argument."""


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x: torch.Tensor, emb: torch.Tensor, encoder_out: torch.Tensor | None = None):
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_out)
            else:
                x = layer(x)
        return x


class ResBlock(TimestepBlock):
    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        self.resample = "up" if up else "down" if down else None
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self._resample(h)
            x = self._resample(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0].scale_shift(h, scale, shift)
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over H*W tokens with the text's keys/values prepended (no padding mask)."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        encoder_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads if num_head_channels == -1 else channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"channels {channels} not divisible by {self.num_heads} heads")
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, channels * 2, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))
        self.attention_impl = "einsum"

    def forward(self, x: torch.Tensor, encoder_out: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        heads, d = self.num_heads, c // self.num_heads
        qkv = self.qkv(self.norm(x).view(b, c, -1)).reshape(b * heads, 3 * d, -1)  # grouped by head
        ekv = None if encoder_out is None else self.encoder_kv(encoder_out).reshape(b * heads, 2 * d, -1)
        if self.attention_impl == "einsum":  # the official layout, for bit-level parity
            q, k, v = qkv.split(d, dim=1)
            if ekv is not None:
                ek, ev = ekv.split(d, dim=1)
                k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
            scale = 1 / math.sqrt(math.sqrt(d))
            weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
            weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
            a = torch.einsum("bts,bcs->bct", weight, v)
        else:
            # [B*heads, L, d] with unit stride along d, which the fused SDPA kernels (flash, memory-efficient)
            # require: given transposed views SDPA silently takes its unfused math path (seen on an H200: bmm,
            # softmax and where kernels, a third of a forward). One copy for qkv, one for the text's kv.
            q, k, v = qkv.transpose(1, 2).contiguous().split(d, dim=-1)
            if ekv is not None:
                ek, ev = ekv.transpose(1, 2).contiguous().split(d, dim=-1)
                k, v = torch.cat([ek, k], dim=1), torch.cat([ev, v], dim=1)
            a = attention(q, k, v, self.attention_impl).transpose(1, 2)
        h = self.proj_out(a.reshape(b, c, -1))
        return x + h.reshape(b, c, *spatial)


class UNetModel(nn.Module):
    """The torso shared by all variants (guided-diffusion's UNetModel, 2-D, no class labels)."""

    def __init__(self, config: ModelConfig, in_channels: int, encoder_channels: int | None) -> None:
        super().__init__()
        self._register_text_tables(config)
        cfg = config
        mc = cfg.num_channels
        mult = cfg.resolved_channel_mult
        attention_ds = cfg.attention_ds
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        self.config = cfg
        self.in_channels = in_channels
        self.model_channels = mc
        self.dtype = torch.float16 if cfg.use_fp16 else torch.float32
        emb_dim = mc * 4

        def res(ch: int, out: int, **kw) -> ResBlock:
            return ResBlock(ch, emb_dim, cfg.dropout, out, cfg.use_scale_shift_norm, **kw)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, cfg.num_head_channels, encoder_channels)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = input_ch = int(mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        chans = [ch]
        ds = 1
        for level, m in enumerate(mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(m * mc))]
                ch = int(m * mc)
                if ds in attention_ds:
                    layers.append(attn(ch, cfg.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else nn.AvgPool2d(2)
                self.input_blocks.append(TimestepEmbedSequential(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, cfg.num_heads), res(ch, ch))
        self.output_blocks = nn.ModuleList([])
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + chans.pop(), int(mc * m))]
                ch = int(mc * m)
                if ds in attention_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(
                        res(ch, ch, up=True) if cfg.resblock_updown else nn.Upsample(scale_factor=2)
                    )
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), zero_module(nn.Conv2d(input_ch, 6, 3, padding=1))
        )

    def _register_text_tables(self, config: ModelConfig) -> None:
        """Hook for parameters that must come first in the state dict (none in the bare torso)."""

    def torso(self, x: torch.Tensor, emb: torch.Tensor, xf_out: torch.Tensor | None) -> torch.Tensor:
        hs = []
        h = x.type(self.dtype)
        for module in self.input_blocks:
            h = module(h, emb, xf_out)
            hs.append(h)
        h = self.middle_block(h, emb, xf_out)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb, xf_out)
        # The output block runs in fp32 even under autocast, as the official fp16 model keeps it: eps is
        # multiplied by sqrt(1/abar - 1) (~1e4 at t = 999) in pred_xstart, so a bf16/fp16 eps would be noise.
        with torch.autocast(h.device.type, enabled=False):
            return self.out(h.type(x.dtype).float()).type(x.dtype)


class Text2ImUNet(UNetModel):
    """The 64-px text-conditional base model (3 input channels)."""

    extra_in_channels = 0

    def __init__(self, config: ModelConfig) -> None:
        from .tokenizer import vocab_size

        xf_width = config.xf_width or None
        super().__init__(config, 3 + self.extra_in_channels, xf_width)
        self.xf_width = xf_width
        if xf_width:
            self.transformer = Transformer(xf_width, config.xf_layers, config.xf_heads)
            self.final_ln = LayerNorm(xf_width) if config.xf_final_ln else None
            self.token_embedding = nn.Embedding(vocab_size(config.tokenizer), xf_width)
            self.transformer_proj = nn.Linear(xf_width, self.model_channels * 4)
        self.reset_parameters()

    @property
    def tokenizer(self):
        """The tokenizer the config names (built on first use: GPT-2's files may need a download)."""
        from .tokenizer import get_tokenizer

        return get_tokenizer(self.config.tokenizer)

    def _register_text_tables(self, config: ModelConfig) -> None:
        # Direct parameters are registered first: the official state dict starts with these two tables.
        if config.xf_width:
            self.positional_embedding = nn.Parameter(torch.empty(config.text_ctx, config.xf_width))
            if config.xf_padding:
                self.padding_embedding = nn.Parameter(torch.empty(config.text_ctx, config.xf_width))

    def reset_parameters(self) -> None:
        """Initialise the two text tables (the official code leaves them as torch.empty) with N(0, 0.01).

        Every other layer keeps PyTorch's default init, and the official zero-inits (each ResBlock's last
        conv, each attention proj_out, the final ``out`` conv) are kept, so a fresh model outputs 0.
        """
        if self.xf_width:
            nn.init.normal_(self.positional_embedding, std=0.01)
            if self.config.xf_padding:
                nn.init.normal_(self.padding_embedding, std=0.01)

    def get_text_emb(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(xf_proj [B, 4mc], xf_out [B, xf_width, text_ctx]) for token ids and their mask."""
        xf_in = self.token_embedding(tokens.long())
        xf_in = xf_in + self.positional_embedding[None]
        if self.config.xf_padding:
            xf_in = torch.where(mask[..., None], xf_in, self.padding_embedding[None])
        xf_out = self.transformer(xf_in.to(self.dtype))
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        xf_proj = self.transformer_proj(xf_out[:, -1])
        return xf_proj, xf_out.permute(0, 2, 1)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        text_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """eps and v [B, 6, H, W] for x_t at original-scale ``timesteps``.

        ``text_emb`` (from :meth:`get_text_emb`) may be passed instead of tokens/mask to encode a prompt once
        per sampling run rather than at every step.
        """
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        xf_out = None
        if self.xf_width:
            if text_emb is None:
                if tokens is None or mask is None:
                    raise ValueError("a text-conditional model needs tokens and mask (or text_emb)")
                text_emb = self.get_text_emb(tokens, mask)
            xf_proj, xf_out = text_emb
            emb = emb + xf_proj.to(emb)
        return self.torso(x, emb, xf_out)

    def convert_to_fp16(self) -> Text2ImUNet:
        """The official conversion: torso convs, transformer linears, transformer_proj, token_embedding to fp16.

        Left in fp32 exactly as glide-text2im leaves them: time_embed, norms, ResBlock emb_layers, ``out``,
        positional_embedding and padding_embedding.
        """
        for blocks in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in blocks.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.half()
        if self.xf_width:
            for m in self.transformer.modules():
                if isinstance(m, nn.Linear):
                    m.half()
            self.transformer_proj.half()
            self.token_embedding.half()
        self.dtype = torch.float16
        return self


def _upsample_low_res(low_res: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(low_res, like.shape[2:], mode="bilinear", align_corners=False)


class SuperResText2ImUNet(Text2ImUNet):
    """Upsampler: input concat([x_t, bilinear_up(low_res)])."""

    extra_in_channels = 3

    def forward(self, x, timesteps, low_res=None, **kwargs):  # type: ignore[override]
        if low_res is None:
            raise ValueError("the upsampler needs low_res (the low-resolution image in [-1, 1])")
        return super().forward(torch.cat([x, _upsample_low_res(low_res, x)], dim=1), timesteps, **kwargs)


class InpaintText2ImUNet(Text2ImUNet):
    """Inpainting: input concat([x_t, image*mask, mask]); mask 1 = known, 0 = fill in."""

    extra_in_channels = 4

    def forward(self, x, timesteps, inpaint_image=None, inpaint_mask=None, **kwargs):  # type: ignore[override]
        image = torch.zeros_like(x) if inpaint_image is None else inpaint_image
        m = torch.zeros_like(x[:, :1]) if inpaint_mask is None else inpaint_mask
        return super().forward(torch.cat([x, image * m, m], dim=1), timesteps, **kwargs)


class SuperResInpaintText2ImUNet(Text2ImUNet):
    """Upsampler-inpainting: input concat([x_t, image*mask, mask, bilinear_up(low_res)])."""

    extra_in_channels = 7

    def forward(self, x, timesteps, inpaint_image=None, inpaint_mask=None, low_res=None, **kwargs):  # type: ignore[override]
        if low_res is None:
            raise ValueError("the upsampler needs low_res (the low-resolution image in [-1, 1])")
        image = torch.zeros_like(x) if inpaint_image is None else inpaint_image
        m = torch.zeros_like(x[:, :1]) if inpaint_mask is None else inpaint_mask
        x = torch.cat([x, image * m, m, _upsample_low_res(low_res, x)], dim=1)
        return super().forward(x, timesteps, **kwargs)


VARIANTS: dict[str, type[Text2ImUNet]] = {
    "base": Text2ImUNet,
    "upsample": SuperResText2ImUNet,
    "base-inpaint": InpaintText2ImUNet,
    "upsample-inpaint": SuperResInpaintText2ImUNet,
}


def create_model(config: ModelConfig, device: torch.device | str | None = None) -> Text2ImUNet:
    """Build the variant that ``config`` describes (inpaint / super_res flags)."""
    with torch.device(device or "cpu"):
        model = VARIANTS[config.variant](config)
    return model
