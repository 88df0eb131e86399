"""RunSpec: everything that determines a run's images, frozen, validated and fingerprinted.

Owns the resolved description of one evaluation run and its identity:

- :class:`Setting`: one guidance kind and scale (a row of the results table).
- :class:`RunSpec`: suite, model identities (weights' SHA-256, or the recipe of a random initialisation), data
  identity and caption selection, sample count, seed, settings, sampler/steps, resolution, chunk size, dtype,
  attention kernel, device type and the metric options.
- :meth:`RunSpec.fingerprint`: SHA-256 of the canonical JSON of all fields. The run directory is
  ``OUT/<suite>/<label>-<fingerprint[:12]>``, so a changed spec never writes into an old run's directory.

What is deliberately NOT in the spec (it does not change a single pixel or number): where the data lives on
disk, the output root, the number of processes / the shard, progress bars. ``batch_size`` IS in the spec: it
is the generation chunk size C, and CPU kernels may round differently for different batch sizes (a uint8 level
at most), so a run is only byte-reproducible at the same C. Every chunk ``[k*C, (k+1)*C)`` is always sampled
whole, whichever process or resume generates it (see :mod:`glidebench.runner.generate`).

Per-index seeds (docs/harness.md): sample ``i`` uses ``seed + i`` (one ``torch.Generator`` per row).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .keys import check_keys
from .paths import ensure_under, slug_name

SPEC_VERSION = 1
GUIDANCE_KINDS = ("cfg", "clip", "none")
SAMPLERS = ("ancestral", "ddim", "plms", "dpm++2m", "dpm++2m-sde")  # glide.diffusion.samplers.SAMPLERS
DTYPES = ("fp32", "fp16", "bf16")
ATTENTION_IMPLS = ("einsum", "sdpa")  # as glide.nn.ATTENTION_IMPLS (this module stays torch-free)
DATA_KINDS = ("embedded", "coco")
CAPTION_MODES = ("one-per-image", "random", "single-object", "file")  # single-object: embedded; file: a list
SEED_LIMIT = 2**32  # every seed is below it: numpy's (KID's subsets); the upsampler's is seed + 2**32
FID_RESIZE_MODES = ("tf-bilinear", "clean")  # as glidebench.features.FID_RESIZE_MODES (torch-free here)
CAPTION_STYLES = ("exact", "short")  # the embedded set's caption wording (short: parts left unsaid)
INTERVAL_METHODS = (
    "jackknife",
    "bootstrap",
)  # as glidebench.runner.uncertainty.METHODS (docs/uncertainty.md)
MODEL_FAMILIES = ("embedded", "official", "plugin")  # plugin: any other generator (glidebench.generators)
INCEPTION_SOURCES = ("auto", "torch-fidelity", "fid-helper")
# The fields that define the evaluation protocol, whatever the model (RunSpec.protocol_fingerprint).
PROTOCOL_FIELDS = (
    "suite", "suite_version", "data", "split", "data_id", "captions", "caption_style", "num_samples",
    "reference_size", "seed", "settings", "resolution", "inception", "kid_subset_size", "prc_k", "spec_version",
    "samples_per_prompt", "diversity_prompts", "bootstrap_resamples", "fid_resize", "reference_stats",
    "intervals", "reference_protocol", "kid_seed",
)  # fmt: skip
_STEPS_RE = re.compile(r"^(\d+(,\d+)*|ddim\d+|quad\d+|fast27)$")


def _format_scale(scale: float) -> str:
    return f"{scale:g}"


@dataclass(frozen=True)
class Setting:
    """One guidance kind and scale; ``none`` means unguided (the conditional model alone, scale 1)."""

    guidance: str
    scale: float

    def __post_init__(self) -> None:
        if self.guidance not in GUIDANCE_KINDS:
            raise ValueError(f"guidance must be one of {GUIDANCE_KINDS}, got {self.guidance!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
            raise TypeError(f"scale must be a number, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))
        if not math.isfinite(self.scale) or self.scale < 0:
            raise ValueError(f"scale must be a finite number >= 0, got {self.scale}")
        if self.guidance == "none" and self.scale != 1.0:
            raise ValueError("unguided sampling ('none') has no scale; use scale 1")

    @property
    def setting_id(self) -> str:
        """``cfg-1.5``, ``clip-2``, ``none``: unique within a run, safe as a directory name."""
        return "none" if self.guidance == "none" else f"{self.guidance}-{_format_scale(self.scale)}"

    def to_dict(self) -> dict[str, Any]:
        return {"guidance": self.guidance, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Setting:
        _check_keys(cls, data)
        return cls(str(data["guidance"]), data["scale"])


def _check_keys(cls: type, data: Mapping[str, Any], optional: Sequence[str] = ()) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    hint = f"was it written by another spec version than {SPEC_VERSION}?"
    check_keys(cls.__name__, data, names, names - set(optional), hint)


@dataclass(frozen=True)
class RunSpec:
    """The resolved, frozen description of a run (see the module docstring for what is and is not in it)."""

    suite: str
    suite_version: int
    model: str  # family: "embedded" | "official"
    model_label: str  # what the results' "model" column says (e.g. "embedded-random-init")
    weights: tuple[tuple[str, str], ...]  # (role, identity): sha256 of a file or "random-init:..."
    data: str  # "embedded" | "coco"
    split: str  # "test" (embedded) | "val2014" | "val2017"
    data_id: str  # embedded dataset fingerprint or the annotations file's SHA-256 prefix
    captions: str  # "one-per-image" | "random" | "single-object"
    num_samples: int
    reference_size: int  # images in the reference set (0: the whole split)
    seed: int
    settings: tuple[Setting, ...]
    sampler: str
    steps: str
    resolution: int
    base_resolution: int
    up_sampler: str
    up_steps: str
    upsample_temp: float
    batch_size: int
    dtype: str
    device_type: str
    inception: str = "auto"
    kid_subset_size: int = 1000
    prc_k: int = 3
    random_init: bool = False
    spec_version: int = SPEC_VERSION
    # classifier-free guidance only at timesteps lo..hi (Kynkaanniemi et al. 2024); None = every step, as GLIDE.
    # Left out of the canonical JSON when None, so runs without it keep their fingerprints.
    cfg_interval: tuple[int, int] | None = None
    # attention kernel of the generators: "einsum" (the official numerics, the default) or "sdpa" (PyTorch's
    # fused kernel: equal within float rounding, faster, so images differ in the last bits). Left out of the
    # canonical JSON when "einsum", so runs from before this option keep their fingerprints.
    attention: str = "einsum"
    # the embedded set's captions: "exact" (every attribute stated, the default) or "short" (each caption leaves
    # parts of its scene unsaid, glidebench.data.embedded.short_caption). Left out of the canonical JSON when
    # "exact", so runs from before this option keep their fingerprints.
    caption_style: str = "exact"
    # K images per caption for intra-caption diversity: indices N..N+M(K-1)-1 repeat the captions of
    # the first M prompts (M = diversity_prompts, 0 = all N) with their own seeds; bootstrap_resamples is the
    # number of bootstrap resamples of the intervals. Each left out of the canonical JSON at its default.
    samples_per_prompt: int = 1
    diversity_prompts: int = 0
    bootstrap_resamples: int = 1000
    # how intervals are computed: "jackknife" (delete-one-block, the default) or "bootstrap" (bootstrap_resamples
    # resamples; too wide for FID, kept to reproduce older runs). bootstrap_resamples 0 turns intervals off with
    # either. Left out of the canonical JSON when "jackknife".
    intervals: str = "jackknife"
    # FID's resize to 299 px ("tf-bilinear", the default, or "clean": clean-fid's PIL bicubic) and the SHA-256 of
    # the --reference-stats file ("" = reference images). Each left out of the canonical JSON at its default.
    fid_resize: str = "tf-bilinear"
    reference_stats: str = ""
    # the declared protocol of a --reference-stats file without a sidecar ("tf-bilinear:256", glidebench.refstats)
    # and KID's subset seed (None: the run's seed). Each left out of the canonical JSON at its default.
    reference_protocol: str = ""
    kid_seed: int | None = None
    # GLIDE sampled on the fast inference path (glide.fast: fused attention, channels-last with an exact
    # GroupNorm on CPU, compile and CUDA graphs on CUDA); equal to the official numerics within float rounding,
    # so its own identity. Left out of the canonical JSON when False.
    fast: bool = False
    # sFID (the ADM evaluator's spatial FID) measured too: the Inception extractor also gives its spatial features
    # (--sfid; on by itself against an ADM batch with mu_s / sigma_s). Left out of the canonical JSON when False.
    sfid: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(sorted((str(r), str(i)) for r, i in self.weights)))
        object.__setattr__(
            self,
            "settings",
            tuple(s if isinstance(s, Setting) else Setting.from_dict(s) for s in self.settings),
        )
        if self.spec_version != SPEC_VERSION:
            raise ValueError(
                f"spec_version {self.spec_version} is not {SPEC_VERSION}; rerun with this glidebench"
            )
        if self.model not in MODEL_FAMILIES:
            raise ValueError(f"model must be one of {MODEL_FAMILIES}, got {self.model!r}")
        if self.data not in DATA_KINDS:
            raise ValueError(f"data must be one of {DATA_KINDS}, got {self.data!r}")
        if self.captions not in CAPTION_MODES:
            raise ValueError(f"captions must be one of {CAPTION_MODES}, got {self.captions!r}")
        for name in ("num_samples", "batch_size", "resolution", "base_resolution"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name, least in (("samples_per_prompt", 1), ("diversity_prompts", 0), ("bootstrap_resamples", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {v!r}")
        if self.samples_per_prompt == 1:  # no extra draws: the diversity captions do not apply
            object.__setattr__(self, "diversity_prompts", 0)
        if self.prc_k < 1:
            raise ValueError(f"prc_k must be >= 1, got {self.prc_k}")
        if self.kid_seed is not None and (isinstance(self.kid_seed, bool) or not isinstance(self.kid_seed, int)
                                          or self.kid_seed < 0):  # fmt: skip
            raise ValueError(
                f"kid_seed must be an integer >= 0 (or None: the run's seed), got {self.kid_seed!r}"
            )
        if self.seed + self.total_samples > SEED_LIMIT or (self.kid_seed or 0) >= SEED_LIMIT:
            raise ValueError(f"--seed {self.seed} (--kid-seed {self.kid_seed}): sample i uses seed + i and every seed "
                             f"must be below 2**32 = {SEED_LIMIT}; use --seed 0..{SEED_LIMIT - self.total_samples}")  # fmt: skip
        if self.intervals not in INTERVAL_METHODS:
            raise ValueError(f"intervals must be one of {INTERVAL_METHODS}, got {self.intervals!r}")
        if self.fid_resize not in FID_RESIZE_MODES:
            raise ValueError(f"fid_resize must be one of {FID_RESIZE_MODES}, got {self.fid_resize!r}")
        for name in ("num_samples", "reference_size"):
            if name == "reference_size" and self.reference_stats:
                continue  # statistics, not images: FID needs no reference count, and KID / P&R are not measured
            if getattr(self, name) <= self.prc_k:
                raise ValueError(
                    f"{name}={getattr(self, name)} is too few samples: precision/recall (k={self.prc_k}) needs more "
                    f"than {self.prc_k} images per set and FID at least 2; use {self.prc_k + 1} or more "
                    "(>= 2048 for a stable FID)"
                )
        if not self.settings:
            raise ValueError("a run needs at least one setting (e.g. --cfg 1,3)")
        ids = [s.setting_id for s in self.settings]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate settings {ids}; give each guidance scale once")
        for name in ("sampler", "up_sampler"):
            if getattr(self, name) not in SAMPLERS:
                raise ValueError(f"{name} must be one of {SAMPLERS}, got {getattr(self, name)!r}")
        for name in ("steps", "up_steps"):
            if not _STEPS_RE.match(getattr(self, name)):
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not a respacing: use 'N' (e.g. 100), 'a,b,c', 'ddimN', 'quadN' or 'fast27'"
                )
        if self.cfg_interval is not None:
            object.__setattr__(self, "cfg_interval", parse_interval(self.cfg_interval, "cfg_interval"))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {self.attention!r}")
        if self.caption_style not in CAPTION_STYLES:
            raise ValueError(f"caption_style must be one of {CAPTION_STYLES}, got {self.caption_style!r}")
        if self.caption_style != "exact" and self.data != "embedded":
            raise ValueError(
                "caption_style 'short' is for the embedded set; MS-COCO captions are people's own"
            )
        if self.inception not in INCEPTION_SOURCES:
            raise ValueError(f"inception must be one of {INCEPTION_SOURCES}, got {self.inception!r}")
        if self.resolution < self.base_resolution:
            raise ValueError(
                f"resolution {self.resolution} is below the base model's {self.base_resolution} px; use "
                f"{self.base_resolution} (base only) or the upsampler's output size"
            )

    # -- derived ---------------------------------------------------------------------------------------
    @property
    def upsample(self) -> bool:
        return self.resolution != self.base_resolution

    @property
    def total_samples(self) -> int:
        """Images per setting: the protocol's num_samples plus the extra draws per caption (K images
        for each of the first M captions)."""
        return total_images(self.num_samples, self.samples_per_prompt, self.diversity_prompts)

    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.total_samples)]

    def setting(self, setting_id: str) -> Setting:
        for s in self.settings:
            if s.setting_id == setting_id:
                return s
        raise KeyError(setting_id)

    def setting_record(self, s: Setting) -> dict[str, Any]:
        """The settings.json entry of ``s`` (run-directory contract)."""
        return {
            "guidance": s.guidance,
            "scale": s.scale,
            "sampler": self.sampler,
            "steps": self.steps,
            "resolution": self.resolution,
            "model": self.model_label,
            "up_sampler": self.up_sampler if self.upsample else None,
            "up_steps": self.up_steps if self.upsample else None,
        } | ({"cfg_interval": list(self.cfg_interval)} if self.cfg_interval is not None else {})

    # -- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["weights"] = dict(self.weights)
        d["settings"] = [s.to_dict() for s in self.settings]
        if self.attention == "einsum":
            del d["attention"]
        if self.caption_style == "exact":
            del d["caption_style"]
        for name, default in (
            ("samples_per_prompt", 1), ("diversity_prompts", 0), ("bootstrap_resamples", 1000),
            ("fid_resize", "tf-bilinear"), ("reference_stats", ""), ("intervals", "jackknife"),
            ("reference_protocol", ""), ("kid_seed", None), ("fast", False), ("sfid", False),
        ):  # fmt: skip
            if d[name] == default:
                del d[name]
        if self.cfg_interval is None:
            del d["cfg_interval"]
        else:
            d["cfg_interval"] = list(self.cfg_interval)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        data = {k: v for k, v in data.items() if k not in ("fingerprint",)}
        optional = [f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING]
        _check_keys(cls, data, optional)
        data = dict(data)
        data["weights"] = tuple(sorted(dict(data["weights"]).items()))
        data["settings"] = tuple(Setting.from_dict(s) for s in data["settings"])
        return cls(**data)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def record(self) -> dict[str, Any]:
        """spec.json: the resolved spec plus its fingerprint."""
        return self.to_dict() | {"fingerprint": self.fingerprint}

    @property
    def protocol_fingerprint(self) -> str:
        """SHA-256 of what makes two runs comparable whatever the model (:data:`PROTOCOL_FIELDS`: data,
        captions, seeds, settings, evaluation resolution, metric options): equal for two models evaluated under
        the identical protocol. Not part of spec.json (existing run directories stay valid)."""
        d = self.to_dict()
        blob = json.dumps({k: d[k] for k in PROTOCOL_FIELDS if k in d}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def run_name(self) -> str:
        """``<model>-<data>-<resolution>px-<fingerprint[:12]>``, the model part a plain, bounded slug of
        ``model_label`` (:func:`glidebench.paths.slug_name`: unchanged for ordinary names such as ``embedded``;
        a plug-in's ``/abs``, ``../x`` or ``org/model`` cannot move the run). The full label stays in spec.json."""

        return f"{slug_name(self.model_label)}-{slug_name(self.data)}-{self.resolution}px-{self.fingerprint[:12]}"

    def run_dir(self, out: str | Path) -> Path:
        """``OUT/<suite>/<run_name>``, checked to lie inside ``out``."""

        return ensure_under(out, Path(out) / slug_name(self.suite) / self.run_name)

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)


def total_images(num_samples: int, samples_per_prompt: int, diversity_prompts: int) -> int:
    """N protocol images plus K - 1 extra draws for each of the first M captions (M = 0: all of them)."""
    if samples_per_prompt <= 1:
        return num_samples
    m = min(num_samples, diversity_prompts or num_samples)
    return num_samples + m * (samples_per_prompt - 1)


def parse_interval(value: Any, option: str) -> tuple[int, int]:
    """'lo,hi' / 'lo-hi' / [lo, hi] -> (lo, hi): timesteps on the model's 0..T-1 scale, 0 <= lo <= hi."""
    parts: list[Any]
    if isinstance(value, str):
        parts = value.replace("-", ",").split(",")
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        parts = []
    try:
        lo, hi = (int(str(p).strip()) for p in parts)
    except ValueError:
        lo, hi = -1, -2
    if not 0 <= lo <= hi:
        raise ValueError(
            f"{option}={value!r} is not a timestep interval: give 'lo,hi' with 0 <= lo <= hi on the model's 0..T-1 "
            "scale, e.g. 100,750 (guidance at timesteps 100 to 750 only)"
        )
    return lo, hi


def format_interval(interval: tuple[int, int] | None) -> str:
    """(lo, hi) -> 'lo-hi'; None -> '' (guidance at every step)."""
    return "" if interval is None else f"{interval[0]}-{interval[1]}"


def parse_scales(text: str | None, option: str) -> list[float]:
    """``"1,1.5,2"`` -> [1.0, 1.5, 2.0]; empty / None -> []. Errors name the option."""
    if text is None or str(text).strip() == "":
        return []
    out = []
    for part in str(text).split(","):
        try:
            v = float(part)
        except ValueError:
            raise ValueError(
                f"{option}: {part!r} is not a number; give comma-separated scales like 1,1.5,2"
            ) from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{option}: scale {part} must be a finite number >= 0")
        out.append(v)
    return out


def make_settings(cfg: Sequence[float], clip: Sequence[float], unguided: bool = False) -> tuple[Setting, ...]:
    settings = [Setting("none", 1.0)] if unguided else []
    settings += [Setting("cfg", s) for s in cfg] + [Setting("clip", s) for s in clip]
    return tuple(settings)


@dataclass(frozen=True)
class Shard:
    """Which part of the chunks this process generates: ``index`` of ``count`` (``--shard i/n``)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard must be i/n with 0 <= i < n, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise ValueError(f"--shard {text!r}: use i/n, e.g. --shard 0/4 (shards are numbered from 0)")
        return cls(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class Worker:
    """One generating process: global worker ``index`` of ``count`` = shard x torch.distributed rank."""

    index: int = 0
    count: int = 1
    rank: int = 0
    world: int = 1
    shard: Shard = field(default_factory=Shard)

    @classmethod
    def make(cls, shard: Shard, rank: int = 0, world: int = 1) -> Worker:
        return cls(shard.index * world + rank, shard.count * world, rank, world, shard)
