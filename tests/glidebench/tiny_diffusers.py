"""A tiny random Stable Diffusion pipeline for the diffusers adapter's tests, built from configs and saved with
``save_pretrained`` (nothing is downloaded): an 8x8-latent UNet2DConditionModel, a 2-level AutoencoderKL
(16 px images), a one-layer CLIPTextModel and a byte-level CLIP BPE tokenizer whose vocab.json and merges.txt
are written here, and a DDIM scheduler."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_LEN = 77  # the tokenizer's and text encoder's context (CLIP's)
NATIVE = 16  # latent 8 x VAE scale factor 2


def byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: the printable bytes as themselves, the rest shifted past 255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_tokenizer_files(folder: Path) -> int:
    """vocab.json (special tokens, every byte symbol alone and word-final, a few merges) and merges.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in byte_symbols():
        vocab[s] = len(vocab)
    for s in byte_symbols():
        vocab[s + "</w>"] = len(vocab)
    merges = ["t h", "th e</w>", "a n", "an d</w>", "o n</w>"]
    for m in ("th", "the</w>", "an", "and</w>", "on</w>"):
        vocab.setdefault(m, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def build_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """Build the tiny pipeline (weights seeded random) and save it to ``folder``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    n_vocab = write_tokenizer_files(folder.parent / f"{folder.name}-tokenizer-src")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder.parent / f"{folder.name}-tokenizer-src"))
    tokenizer.model_max_length = TEXT_LEN
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=NATIVE // 2, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 8), latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=NATIVE,
    )  # fmt: skip
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=n_vocab,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=TEXT_LEN,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )  # fmt: skip
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(str(folder))
    return folder
