"""The training loop shared by the four GLIDE training jobs (base, inpaint, upsample, noised/clean CLIP).

- Base (GLIDE section 4): text-conditional, hybrid loss (:mod:`glide.train.losses`), with the caption
  replaced by the empty one (all padding, all-False mask) with probability ``p_uncond`` (classifier-free).
- Inpaint (section 3.1): a base checkpoint is copied into the inpaint variant, whose 4 extra input channels
  of ``input_blocks.0.0`` are zero-initialised (so it starts as the base model); random rectangles are erased
  (mask 1 = keep) and the kept pixels and the mask are extra inputs.
- Upsample: ``low_res`` = the image box-downsampled, optionally blurred, then 8-bit quantised (official).
- CLIP (section 2.3): InfoNCE between captions and noised images ``x_t = q_sample(x_0, t)`` at their t
  (``clip_mode="noised"``) or clean images at t = 0 (``clip_mode="clean"``, an evaluator CLIP).

AdamW, EMA, gradient clipping, autocast (bf16 / fp16 with GradScaler) on CUDA, atomic checkpoints every N
steps / minutes and on Ctrl-C or SIGTERM. Every random draw of step k is seeded by (seed, k), so a resumed
run equals an uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..checkpoints import load_model, save_model
from ..config import ModelConfig
from ..diffusion.gaussian import create_gaussian_diffusion
from ..fileio import atomic_path
from ..unet import Text2ImUNet, create_model
from . import data as D
from .ema import EMA
from .losses import contrastive_loss, hybrid_loss
from .recipes import Recipe, resolve_factory, resolved_model_options

CHECKPOINT_NAME = "checkpoint.pt"


def emphasise_timesteps(
    t: torch.Tensor,
    num_timesteps: int,
    g: torch.Generator,
    high_fraction: float = 0.0,
    high_start: float = 0.8,
    low_fraction: float = 0.0,
    low_end: float = 0.1,
) -> torch.Tensor:
    """Redraw shares of the timesteps ``t``: ``high_fraction`` of them uniformly from ``[int(high_start * T), T)``
    and another ``low_fraction`` from ``[0, int(low_end * T))``; the rest stay (all draws seeded by ``g``)."""
    u = torch.rand(t.shape, generator=g)
    if high_fraction:
        high = torch.randint(int(high_start * num_timesteps), num_timesteps, t.shape, generator=g)
        t = torch.where(u < high_fraction, high, t)
    if low_fraction:
        low = torch.randint(0, max(1, int(low_end * num_timesteps)), t.shape, generator=g)
        t = torch.where((u >= high_fraction) & (u < high_fraction + low_fraction), low, t)
    return t


def inpaint_from_base(base: Text2ImUNet, **overrides: Any) -> Text2ImUNet:
    """The inpaint variant of ``base`` with all weights copied and the 4 extra input channels zeroed.

    Before fine-tuning its output equals the base model's for any image/mask (the new channels see zeros).
    """
    if base.config.inpaint:
        raise ValueError("the model is already an inpainting model")
    config = base.config.replace(inpaint=True, **overrides)
    model = create_model(config)
    src = base.state_dict()
    with torch.no_grad():
        for k, v in model.state_dict().items():
            s = src[k].to(v.dtype)
            if k == "input_blocks.0.0.weight":
                v.zero_()
                v[:, : s.shape[1]].copy_(s)
            else:
                v.copy_(s)
    return model


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class Trainer:
    """One training run: build from a recipe (or a checkpoint), step, checkpoint, export."""

    def __init__(
        self,
        recipe: Recipe,
        out_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        resume: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.progress = progress
        ckpt = None
        if resume is not None:
            ckpt = torch.load(resume, map_location="cpu", weights_only=True)
            saved = Recipe.from_dict(ckpt["recipe"])
            # a resumed run may only change how long it runs and how often it saves
            recipe = saved.replace(
                max_steps=recipe.max_steps,
                checkpoint_every_steps=recipe.checkpoint_every_steps,
                checkpoint_every_minutes=recipe.checkpoint_every_minutes,
            )
        self.recipe = recipe
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.dataset = resolve_factory(recipe.dataset)(**recipe.dataset_kwargs)
        self.is_clip = recipe.kind == "clip"
        self.model = self._build_model(ckpt).to(self.device)
        if not self.is_clip:
            self.check_output_norm(self.model.config)
        self._memory_format = torch.preserve_format
        if recipe.channels_last and not self.is_clip:
            self._memory_format = torch.channels_last
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.diffusion = self._build_diffusion()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=recipe.lr, betas=recipe.adam_betas, weight_decay=recipe.weight_decay
        )
        self.ema = EMA(self.model, recipe.ema_rate, recipe.ema_warmup)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=recipe.precision == "fp16" and self.device.type == "cuda"
        )
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.wall_seconds = 0.0
        self._token_cache: dict[str, Any] = {}
        if ckpt is not None:
            self._load_state(ckpt)

    # -- construction ------------------------------------------------------------------------------------
    def _build_model(self, ckpt: dict | None) -> torch.nn.Module:
        r = self.recipe
        if self.is_clip:
            from ..clip import ClipConfig, create_clip_model

            config = ClipConfig.from_dict(ckpt["config"] if ckpt else dict(r.model))
            if ckpt is None and r.base_checkpoint:  # warm start from an exported CLIP (save_clip format)
                from ..clip.io import load_trained_clip

                start = load_trained_clip(r.base_checkpoint).train()
                self._check_warm_start(start.config.to_dict(), config.to_dict(), "CLIP")
                return start
            return create_clip_model(
                config=config, device="cpu", generator=torch.Generator().manual_seed(r.seed)
            )
        if ckpt is not None:
            return create_model(ModelConfig.from_dict(ckpt["config"]))
        torch.manual_seed(r.seed)  # PyTorch's default layer init draws from the global generator
        if r.kind == "inpaint":
            base = load_model(r.base_checkpoint)
            return inpaint_from_base(base, **resolved_model_options(r))
        options = resolved_model_options(r)
        if r.kind == "upsample":
            options["super_res"] = True
        config = ModelConfig.from_dict(options)
        if config.variant != {"base": "base", "upsample": "upsample"}[r.kind]:
            raise ValueError(
                f"recipe kind {r.kind!r} but its model options describe a {config.variant!r} model"
            )
        if not r.base_checkpoint:
            return create_model(config)
        start = load_model(
            r.base_checkpoint
        )  # warm start: the checkpoint's weights, the recipe's architecture
        self._check_warm_start(start.config.to_dict(), config.to_dict(), "model")
        return start

    def _check_warm_start(self, start: dict[str, Any], recipe: dict[str, Any], what: str) -> None:
        if start != recipe:
            raise ValueError(
                f"base_checkpoint {self.recipe.base_checkpoint} is a different {what} from the recipe's (checkpoint "
                f"config {start}, recipe {recipe}); make the recipe's model options match the checkpoint"
            )

    @staticmethod
    def check_output_norm(config: ModelConfig) -> None:
        """Warn when the UNet's output GroupNorm32 holds one channel per group.

        The output block is GroupNorm32(32, C) -> SiLU -> conv. With C = 32 (num_channels x channel_mult[0])
        each group is one channel, i.e. an instance norm: every feature map loses its spatial mean, so the
        spatial mean of the predicted eps hardly depends on the input, and a trained model cannot denoise an
        image's global colour (samples drift to wrong background colours). The official models have 192
        channels (6 per group)."""
        width = int(config.num_channels * config.resolved_channel_mult[0])
        if width // 32 < 2:
            warnings.warn(
                f"the UNet's top level has {width} channels, so its output GroupNorm32 normalises each channel "
                "on its own and the model cannot predict an image's global colour; use num_channels x "
                "channel_mult[0] >= 64",
                stacklevel=3,
            )

    def _build_diffusion(self):
        if self.is_clip:
            c = self.model.config
            return create_gaussian_diffusion(c.n_timesteps, c.beta_schedule, "")
        c = self.model.config
        return create_gaussian_diffusion(c.diffusion_steps, c.noise_schedule, "")

    @property
    def config(self):
        return self.model.config

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "rng": {"torch": torch.get_rng_state()},
            "config": self.config.to_dict(),
            "recipe": self.recipe.to_dict(),
            "model_type": "clip" if self.is_clip else "unet",
            "history": self.history,
            "wall_seconds": self.wall_seconds,
        }

    def _load_state(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.history = list(ckpt.get("history", []))
        self.wall_seconds = float(ckpt.get("wall_seconds", 0.0))

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        if path is None:
            if self.out_dir is None:
                raise ValueError("no out_dir and no path: give save_checkpoint a path")
            path = self.out_dir / CHECKPOINT_NAME
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(self.state_dict(), path)
        return path

    # -- one step ------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.device.type != "cuda" or self.recipe.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.recipe.precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _text_batch(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for c in captions:
            if c not in self._token_cache:
                if self.is_clip:
                    tok, n = self.model.tokenizer.encode_batch([c], self.config.max_text_len)
                    self._token_cache[c] = (tok[0], n[0])
                else:
                    tok, mask = self.model.tokenizer.batch([c], self.config.text_ctx)
                    self._token_cache[c] = (tok[0], mask[0])
            rows.append(self._token_cache[c])
        return (
            torch.stack([r[0] for r in rows]).to(self.device),
            torch.stack([r[1] for r in rows]).to(self.device),
        )

    def compute_loss(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of batch ``step`` (all randomness from (seed, step))."""
        r = self.recipe
        torch.manual_seed(D.step_seed(r.seed, step, 1))  # dropout and anything else drawing globally
        g = D.step_generator(r.seed, step)
        images, captions = self.dataset.train_batch(r.seed, step, r.batch_size)[:2]
        images = images.float()
        n = images.shape[0]
        T = self.diffusion.num_timesteps
        if self.is_clip:
            x0 = D.resize(images, self.config.image_size)
            if r.clip_mode == "noised":
                t = torch.randint(0, T, (n,), generator=g)
                x = self.diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g))
            else:
                t = torch.zeros(n, dtype=torch.long)
                x = x0
            tokens, lens = self._text_batch(list(captions))
            with self._autocast():
                z_img = self.model.image_embeddings(x.to(self.device), t.to(self.device))
                z_txt = self.model.text_encoder(tokens, lens).float()
            z_txt = z_txt / (z_txt.norm(dim=-1, keepdim=True) + 1e-12)
            loss = contrastive_loss(z_img, z_txt, self.model.logit_scale, list(captions))
            with torch.no_grad():
                acc = ((z_img @ z_txt.t()).argmax(1).cpu() == torch.arange(n)).float().mean()
            return loss, {"loss": float(loss.detach()), "acc": float(acc)}
        cfg = self.config
        x0 = D.resize(images, cfg.image_size)
        captions = D.drop_captions(list(captions), r.p_uncond, g)
        t = torch.randint(0, T, (n,), generator=g)
        if r.high_t_fraction or r.low_t_fraction:
            t = emphasise_timesteps(t, T, g, r.high_t_fraction, r.high_t_start, r.low_t_fraction, r.low_t_end)
        noise = torch.randn(x0.shape, generator=g)
        if r.offset_noise:
            noise = noise + r.offset_noise * torch.randn(x0.shape[:2] + (1, 1), generator=g)
        x_t = self.diffusion.q_sample(x0, t, noise)
        kwargs: dict[str, torch.Tensor] = {}
        if cfg.inpaint:
            m = D.erase_masks(n, cfg.image_size, g, r.erase_min, r.erase_max, r.erase_max_rects)
            kwargs |= {"inpaint_image": (x0 * m).to(self.device), "inpaint_mask": m.to(self.device)}
        if cfg.super_res:
            kwargs["low_res"] = D.low_res_input(x0, r.low_res_size, g, r.blur_prob, r.blur_sigma).to(
                self.device
            )
        tokens, mask = self._text_batch(captions)
        dev = self.device
        fmt = self._memory_format
        kwargs = {k: v.to(dev, memory_format=fmt) for k, v in kwargs.items()}
        with self._autocast():
            out = self.model(x_t.to(dev, memory_format=fmt), t.to(dev), tokens=tokens, mask=mask, **kwargs)
        terms = hybrid_loss(
            self.diffusion, out, x0.to(dev), x_t.to(dev), t.to(dev), noise.to(dev), r.lambda_vlb
        )
        loss = terms["loss"].mean()
        d = {k: float(v.detach().mean()) for k, v in terms.items()}
        return loss, {"loss": d["loss"], "mse": d["mse"], "vb": d["vb"]}

    def train_step(self) -> dict[str, float]:
        r = self.recipe
        if r.warmup_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = r.lr * min(1.0, (self.step + 1) / r.warmup_steps)
        loss, logs = self.compute_loss(self.step)
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(
                f"loss is {logs['loss']} at step {self.step}; lower lr, or use precision 'bf16'/'fp32'"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if r.grad_clip:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update(self.model)
        self.step += 1
        return logs

    # -- the loop ------------------------------------------------------------------------------------------
    def run(self, max_steps: int | None = None, max_minutes: float | None = None) -> dict[str, float]:
        """Train until ``max_steps`` (default: the recipe's) or ``max_minutes``; checkpoint on exit."""
        r = self.recipe
        max_steps = r.max_steps if max_steps is None else max_steps
        start = time.monotonic()
        last_save = start
        base_wall = self.wall_seconds
        logs: dict[str, float] = {}
        log_file = open(self.out_dir / "log.jsonl", "a") if self.out_dir is not None else None  # noqa: SIM115
        interrupted = False
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum, frame):  # treat `kill PID` like Ctrl-C: checkpoint, then stop
            raise KeyboardInterrupt

        with contextlib.suppress(ValueError):  # not the main thread: no handler
            signal.signal(signal.SIGTERM, on_sigterm)
        bar = tqdm(total=max_steps, initial=self.step, desc=f"train {r.kind}", disable=not self.progress)
        window: list[float] = []
        try:
            while self.step < max_steps:
                if max_minutes is not None and time.monotonic() - start > 60 * max_minutes:
                    break
                logs = self.train_step()
                self.wall_seconds = base_wall + time.monotonic() - start
                window.append(logs["loss"])
                bar.update(1)
                if self.step % r.log_every == 0 or self.step == max_steps:
                    rec = {"step": self.step, "wall_s": round(self.wall_seconds, 1)}
                    rec |= {k: round(v, 5) for k, v in logs.items()}
                    rec["loss_avg"] = round(sum(window) / len(window), 5)
                    window = []
                    self.history.append(rec)
                    bar.set_postfix(loss=rec["loss_avg"])
                    if log_file:
                        log_file.write(json.dumps(rec) + "\n")
                        log_file.flush()
                now = time.monotonic()
                due_steps = r.checkpoint_every_steps and self.step % r.checkpoint_every_steps == 0
                due_time = r.checkpoint_every_minutes and now - last_save > 60 * r.checkpoint_every_minutes
                if self.out_dir is not None and (due_steps or due_time):
                    self.save_checkpoint()
                    last_save = now
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, previous)
            if self.out_dir is not None:
                self.save_checkpoint()
            if log_file:
                log_file.close()
        if interrupted and self.progress:
            print(f"interrupted at step {self.step}; checkpoint written to {self.out_dir}")
        return logs

    # -- export --------------------------------------------------------------------------------------------
    def ema_model(self) -> torch.nn.Module:
        """A copy of the model holding the EMA weights (eval mode, CPU)."""
        if self.is_clip:
            from ..clip import create_clip_model

            model = create_clip_model(config=self.config, device="cpu")
        else:
            model = create_model(self.config)
        self.ema.copy_to(model)
        return model.eval()

    def export(self, path: str | os.PathLike, fp16: bool = True, token_vocab: list[str] | None = None) -> str:
        """Write the EMA weights as safetensors (config in metadata); returns the SHA-256. ``token_vocab``
        (CLIPs): keep only the token-table rows of these words (:func:`glide.clip.io.save_clip`)."""
        from ..clip.io import save_clip, vocabulary_token_rows

        model = self.ema_model()
        meta = {"glide_train_recipe": json.dumps(self.recipe.to_dict()), "glide_train_step": str(self.step)}
        if self.is_clip:
            rows = vocabulary_token_rows(model, token_vocab) if token_vocab is not None else None
            return save_clip(
                model,
                path,
                fp16=fp16,
                extra_metadata=meta | {"clip_mode": self.recipe.clip_mode},
                token_rows=rows,
            )
        if fp16:
            model = model.half()
        return save_model(model, path, extra_metadata=meta)
