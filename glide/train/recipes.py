"""Training recipes: one frozen, validated dataclass per run, read from JSON (or YAML).

A recipe names everything a run depends on, so a checkpoint (which stores its recipe) can be resumed or
reproduced exactly. The dataset (required: ``kind``, ``model`` and ``dataset`` have no default) is a dotted
factory path resolved with importlib at run time (``"package.module:callable"``), so ``glide`` never imports
(or names) a benchmark package: the recipe says which dataset it trains on. The factory,
called with ``dataset_kwargs``, returns an object with ``train_batch(seed, step, batch_size) ->
(images [N, 3, H, W] in [-1, 1], captions, ...)`` whose batch ``step`` depends only on (seed, step).

A ``{"kind": "words", "vocab_from": "module:function"}`` tokenizer in ``model`` is resolved to the word list
the function returns (the closed vocabulary of the dataset's captions).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("base", "inpaint", "upsample", "clip")
PRECISIONS = ("fp32", "bf16", "fp16")
CLIP_MODES = ("noised", "clean")


def resolve_factory(path: str) -> Any:
    """``"pkg.module:attr"`` -> the object (an error names the path and what is wrong)."""
    if ":" not in path:
        raise ValueError(f"factory path {path!r} must look like 'package.module:callable'")
    module, attr = path.split(":", 1)
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(
            f"cannot import {module!r} for factory {path!r} ({e}); is the package installed?"
        ) from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module!r} has no attribute {attr!r} (factory {path!r}); check the recipe")
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Recipe:
    """Options of one training run (see the module docstring; unknown keys are errors)."""

    kind: str
    model: dict[str, Any]
    dataset: str  # "package.module:callable" (required)
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float = 1.0
    ema_rate: float = 0.999
    ema_warmup: bool = True
    precision: str = "fp32"
    # channels_last memory format for the UNet and its image inputs (oneDNN convolutions: ~20% faster
    # training steps on this 2-core AVX2 CPU; numerically a different summation order, so not bit-equal
    # to the default NCHW run)
    channels_last: bool = False
    max_steps: int = 1000
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 2.0
    log_every: int = 10
    # diffusion models
    p_uncond: float = 0.2
    lambda_vlb: float = 0.001
    # offset noise (Guttenberg 2023): the training noise gets a per-image, per-channel constant
    # N(0, offset_noise^2) added, so the global mean of the noise (std 1/side for iid noise) carries real loss
    # weight and the model learns to predict it; without it a small model's samples take their global colour
    # from the starting noise instead of the caption. 0 = the paper's iid Gaussian noise.
    offset_noise: float = 0.0
    # timestep emphasis: this fraction of each batch draws t uniformly from [high_t_start * T, T) instead of
    # [0, T). For fine-tuning what is decided at high noise (an image's global colour: with offset noise its
    # mean is ambiguous there, so only the caption can set it); 0 = the paper's uniform t.
    high_t_fraction: float = 0.0
    high_t_start: float = 0.8
    # and the same at the low end: this fraction is redrawn from [0, low_t_end * T) (what the last sampling
    # steps need: removing the final grey level of noise exactly)
    low_t_fraction: float = 0.0
    low_t_end: float = 0.1
    # inpainting: base checkpoint to start from, and the erased-rectangle sizes (fraction of the side);
    # for base/upsample/clip recipes a base_checkpoint is a warm start (fine-tuning from those weights; a CLIP
    # from glide.clip.io.save_clip)
    base_checkpoint: str = ""
    erase_min: float = 0.25
    erase_max: float = 0.75
    erase_max_rects: int = 2
    # upsampler: low-res size and optional Gaussian-blur augmentation of the low-res input
    low_res_size: int = 0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.4, 0.6)
    # CLIP: "noised" (x_t at random t, the guidance model) or "clean" (t = 0 always, an evaluator)
    clip_mode: str = "noised"
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"recipe kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.dataset, str) or ":" not in self.dataset:
            raise ValueError(
                f"recipe key 'dataset' must be a factory path 'package.module:callable' (e.g. "
                f"'glide.train.data:SolidColourSet'), got {self.dataset!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode must be one of {CLIP_MODES}, got {self.clip_mode!r}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond}")
        if not 0.0 <= self.offset_noise <= 1.0:
            raise ValueError(
                f"offset_noise must be in [0, 1] (0.1 is the usual value), got {self.offset_noise}"
            )
        if not 0.0 <= self.high_t_fraction <= 1.0 or not 0.0 <= self.high_t_start < 1.0:
            raise ValueError(
                f"need high_t_fraction in [0, 1] and high_t_start in [0, 1), got {self.high_t_fraction}, "
                f"{self.high_t_start}"
            )
        if not 0.0 <= self.low_t_fraction <= 1.0 or not 0.0 < self.low_t_end <= 1.0:
            raise ValueError(
                f"need low_t_fraction in [0, 1] and low_t_end in (0, 1], got {self.low_t_fraction}, {self.low_t_end}"
            )
        if self.high_t_fraction + self.low_t_fraction > 1.0:
            raise ValueError("high_t_fraction + low_t_fraction must not exceed 1")
        if self.batch_size < 1 or self.max_steps < 0:
            raise ValueError("batch_size must be >= 1 and max_steps >= 0")
        if not 0 < self.erase_min <= self.erase_max <= 1:
            raise ValueError("need 0 < erase_min <= erase_max <= 1")
        if self.kind == "inpaint" and not self.base_checkpoint:
            raise ValueError("an inpaint recipe needs base_checkpoint (the base model's .safetensors or .pt)")
        if self.kind == "upsample" and self.low_res_size < 1:
            raise ValueError("an upsample recipe needs low_res_size (e.g. 32 for a 32->64 upsampler)")
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        object.__setattr__(self, "blur_sigma", tuple(float(b) for b in self.blur_sigma))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        if not isinstance(data, dict):
            raise ValueError(f"a recipe must be a mapping of keys, got {type(data).__name__}")
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown recipe key(s) {unknown}; valid keys are {sorted(names)}")
        required = [
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in required if k not in data]
        if missing:
            hint = (
                ' (the dataset factory, e.g. "dataset": "glide.train.data:SolidColourSet"; '
                "glide has no default dataset)"
                if "dataset" in missing
                else ""
            )
            raise ValueError(f"recipe lacks the required key(s) {missing}{hint}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)


def resolve_tokenizer(spec: dict[str, Any]) -> dict[str, Any]:
    """Turn ``{"kind": "words", "vocab_from": "mod:fn"}`` into ``{"kind": "words", "vocab": fn()}``."""
    spec = dict(spec)
    if "vocab_from" in spec:
        fn = resolve_factory(spec.pop("vocab_from"))
        spec["vocab"] = list(fn())
    return spec


def resolved_model_options(recipe: Recipe) -> dict[str, Any]:
    """The recipe's model options with the tokenizer spec resolved."""
    options = dict(recipe.model)
    if "tokenizer" in options:
        options["tokenizer"] = resolve_tokenizer(options["tokenizer"])
    return options
