"""A run's plan: the resolved options turned into data source, models, settings, RunSpec, worker and run directory.

    RunOptions -> (options.py) suite options -> RunPlan    (:func:`resolve_plan`; reads the data's captions and
    plans the models, loads no weights and writes nothing)

The stages (:mod:`.stages`) take a :class:`RunPlan`; :func:`first_line` is the line every run prints first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glide.diffusion.schedules import space_timesteps

from .. import features
from .. import models as M
from ..clip_eval import parse_clip_score_model
from ..data.captions_file import CaptionsFileSource
from ..data.coco import resolve_root
from ..data.coco_source import CocoSource, check_options
from ..data.embedded_source import EmbeddedSource
from ..data.sources import DataSource, data_kind
from ..generators import check_supported
from ..generators.folder import FolderGenerator, folders_from_options, settings_of
from ..generators.glide import GlideGenerator
from ..models import upsampler_resolution
from ..models.sources import OpenClipSource
from ..refstats import load_stats
from ..spec import RunSpec, Shard, Worker, make_settings, total_images
from ..suites import SuiteDef, load_suite
from .generate import sampling_options
from .options import (
    DEVICE_TYPES,
    RunOptions,
    check_comparable,
    comparable_fields,
    extra_prompts,
    interval_fields,
    kid_seed,
    resolve_comparable,
    resolve_options,
    spatial_features,
)  # fmt: skip
from .rundir import Dist


@dataclass
class RunPlan:
    """Everything a run's stages need, resolved once (see the module docstring)."""

    options: RunOptions
    suite: SuiteDef
    opts: dict[str, Any]  # the resolved suite options (profile < preset < flags)
    source: DataSource
    models: Any  # glidebench.models.ModelPlan
    spec: RunSpec
    device: torch.device
    shard: Shard
    worker: Worker
    run_dir: Path
    notes: list[str] = field(default_factory=list)
    generator: Any = None  # glidebench.generators.Generator: where the images come from
    reference_stats: Any = None  # glidebench.refstats.ReferenceStats (--reference-stats) or None

    @property
    def run_warnings(self) -> list[str]:
        """Warnings that every result row of this run carries."""
        out = []
        if self.models.random_init:
            out.append(
                "RANDOM-INITIALISED embedded model (no trained weights): a plumbing check, not a result"
            )
        out += list(self.source.warnings)
        return out + [n for n in self.notes if n.startswith("CLIP-guidance settings skipped")]


def _resolution_arg(value: Any, family: str) -> int | None:
    """'base' -> None (the base model's size), 'up' -> the upsampler's size, an int -> itself."""

    if value is None or value == "base":
        return None
    if value == "up":
        return upsampler_resolution(family)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"--resolution {value!r}: give a number of pixels (e.g. 64 or 256), 'base' or 'up'"
        ) from None


def _open_source(data: str, coco_root: Path | None, opts: dict[str, Any]) -> DataSource:
    if opts.get("captions_file"):
        return open_captions_file(coco_root, opts)
    if data == "embedded":
        return EmbeddedSource(opts)

    return CocoSource(coco_root, opts)


def _model_family(o: RunOptions, data: str, opts: dict[str, Any]) -> str:
    """``plugin`` with ``--generator``, else ``--model``, else the official weights for MS-COCO when they are
    cached, else the embedded family."""

    if o.generator_args is not None and o.generator is None:
        raise ValueError("--generator-args goes with --generator module.path:factory (or diffusers:PATH)")
    chosen = [f for f, v in (("--model", o.model), ("--generator", o.generator), ("--images", o.images),
                             ("--images-setting", o.images_setting)) if v]  # fmt: skip
    if len(chosen) > 1 and chosen != ["--images", "--images-setting"]:
        raise ValueError(
            f"{' and '.join(chosen)}: give one (--model is GLIDE's; the others bring another model)"
        )
    if o.generator is not None or o.images or o.images_setting:
        return "plugin"
    if o.model is not None:
        return o.model
    official_ok = M.official_available(256 if opts["resolution"] in ("up", 256, "256") else 64)
    return "official" if data == "coco" and official_ok else "embedded"


def _clip_scales(family: str, opts: dict[str, Any], notes: list[str]) -> list[float]:
    """CLIP-guidance scales: explicit ones always; the profile's only with a trained noised CLIP."""

    scales = opts["clip"]
    if opts["clip_explicit"] or not scales:
        return scales
    if family == "embedded":
        files = M.embedded_files(caption_style=opts["caption_style"])
        has_clip = "noised-clip" in files and "base" in files
    else:
        has_clip = all(M.is_cached(n) for n in M.OFFICIAL_NAMES["noised-clip"])
    if has_clip:
        return scales
    notes.append("CLIP-guidance settings skipped: no trained noised CLIP for this model family")
    return []


def resolve_device(requested: str | None, dist: Dist) -> torch.device:
    """``--device`` (default: cuda when available), refused with a clear message when it cannot be used."""
    if requested is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(requested)
        except RuntimeError:
            device = None
        if device is None or device.type not in DEVICE_TYPES:
            raise ValueError(f"--device {requested!r} is not a device here; use cpu, cuda or cuda:N")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"--device {requested}: no CUDA device is visible to PyTorch on this machine "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu or run "
                "where a GPU is"
            )
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(
                f"--device {requested}: Apple's MPS backend is not available here; use --device cpu"
            )
    if device.type == "cuda" and dist.world > 1:
        device = torch.device("cuda", dist.local_rank)
    return device


def check_timesteps(opts: dict[str, Any], models: Any) -> None:
    """The respacings and the guidance interval against the models' diffusion steps T (before any work)."""

    checks = [("--steps", opts["steps"], models.configs["base"].diffusion_steps)]
    if "upsample" in models.configs:
        checks.append(("--up-steps", opts["up_steps"], models.configs["upsample"].diffusion_steps))
    for flag, value, t in checks:
        try:
            kept = space_timesteps(t, str(value))
        except (ValueError, ZeroDivisionError) as e:
            raise ValueError(
                f"{flag} {value!r} cannot respace the model's {t} diffusion steps: {e}"
            ) from None
        if not kept:
            raise ValueError(f"{flag} {value!r} keeps no step; give at least 1 (e.g. 25, ddim25, quad20)")
    interval, t = opts.get("cfg_interval"), checks[0][2]
    if interval is not None and not 0 <= interval[0] <= interval[1] <= t - 1:
        raise ValueError(
            f"--cfg-interval {interval[0]},{interval[1]}: use LO,HI with 0 <= LO <= HI <= {t - 1}"
        )


def _make_generator(
    o: RunOptions, opts: dict[str, Any], notes: list[str]
) -> tuple[Any, dict[str, Any], list]:
    """The non-GLIDE generator of ``o`` (a folder of images or a plug-in), its kwargs and its settings."""
    from ..generators import build_generator, parse_generator_args

    settings = make_settings(opts["cfg"], opts["clip"], o.unguided)
    if o.images or o.images_setting:
        if not opts["clip_explicit"]:  # the profile's CLIP-guidance scales are GLIDE's, not the folder's
            settings = make_settings(opts["cfg"], [], o.unguided)

        folders = folders_from_options(o.images, o.images_setting, [s.setting_id for s in settings])
        if o.images_setting or len(folders) > 1 or {s.setting_id for s in settings} != set(folders):
            settings = make_settings(*settings_of(folders))
        f = interval_fields(opts, o)  # the folder holds every index: the extra draws per caption too
        total = total_images(int(opts["num_samples"]), f["samples_per_prompt"], f["diversity_prompts"])
        generator = FolderGenerator(folders, total, int(opts["seed"]))
        notes += generator.notes
        return generator, {}, settings
    kwargs = parse_generator_args(o.generator_args)
    generator, kwargs = build_generator(o.generator, kwargs)  # the factory's defaults filled in
    if "clip" not in generator.capabilities.guidance and opts["clip"] and not opts["clip_explicit"]:
        notes.append(f"CLIP-guidance settings skipped: generator {generator.name} has no CLIP guidance")
        settings = make_settings(opts["cfg"], [], o.unguided)
    return generator, kwargs, settings


def _plugin(o: RunOptions, opts: dict[str, Any], data: str, notes: list[str]) -> tuple[Any, Any, int, list]:
    """A generator other than GLIDE (``--generator``, ``--images``), its plan (identities + the data's evaluator
    CLIP), the evaluation resolution (``--resolution N``, else the generator's native size) and the settings
    (the profile's CLIP-guidance scales are skipped, with a note, when the generator has no CLIP guidance; a
    folder's settings are its setting ids)."""

    generator, kwargs, settings = _make_generator(o, opts, notes)
    native = generator.capabilities.resolution
    value = opts["resolution"]
    resolution = native if value in (None, "base", "up") else int(_resolution_arg(value, "plugin") or native)
    identities = {"generator": o.generator or "images"} | {k: str(v) for k, v in generator.identity().items()}
    if kwargs:
        identities["generator-args"] = json.dumps(kwargs, sort_keys=True, default=str)
    if resolution != native and not (o.images or o.images_setting):
        identities["native-resolution"] = str(native)
    plan = M.plan_for_generator(generator.name, identities, resolution, data, opts["caption_style"])
    return generator, plan, resolution, settings


def _attention(o: RunOptions, opts: dict[str, Any]) -> str:
    """The attention kernel: the flag's, else SDPA on the fast path, else the official einsum."""
    return opts.get("attention") or ("sdpa" if o.fast else "einsum")


def resolve_plan(o: RunOptions, dist: Dist) -> RunPlan:
    """Resolve ``o`` into a :class:`RunPlan` (reads the data's captions and plans the models; loads no
    weights and writes nothing)."""

    suite = load_suite(o.suite)
    check_comparable(o)
    coco_root = resolve_root(o.coco_root)
    data = "coco" if o.captions_file and not o.data else data_kind(o.data, coco_root)
    opts = resolve_options(o, suite, data)
    resolve_comparable(o, opts)
    if data == "coco":
        check_options(opts)
    family = _model_family(o, data, opts)
    notes: list[str] = []
    generator = None
    if family == "plugin":
        generator, models, resolution, settings = _plugin(o, opts, data, notes)
    else:
        resolution = _resolution_arg(opts["resolution"], family)
        clip_scales = _clip_scales(family, opts, notes)
        settings = make_settings(opts["cfg"], clip_scales, o.unguided)
        models = M.plan_models(
            family,
            resolution,
            want_noised_clip=bool(clip_scales),
            data=data,
            caption_style=opts["caption_style"],
        )
        check_timesteps(opts, models)
    if o.clip_score_model:
        models.add(eval_clip_source(o.clip_score_model))
    stats = reference_stats(opts, resolution or models.base_resolution)
    source = _open_source(data, coco_root, opts)
    device = resolve_device(o.device, dist)
    attention = _attention(o, opts)
    if generator is None:
        generator = GlideGenerator(models, device, opts["dtype"], attention, fast=o.fast)
    spec = RunSpec(
        suite=suite.name, suite_version=suite.version, model=family, model_label=models.label,
        weights=tuple(models.identities.items()), data=data, split=opts["split"], data_id=source.data_id,
        captions=opts["captions"], num_samples=int(opts["num_samples"]),
        reference_size=stats.count if stats is not None else source.reference_count,
        fid_resize=opts["fid_resize"], reference_stats=stats.sha256 if stats is not None else "",
        seed=int(opts["seed"]), settings=settings,
        sampler=opts["sampler"], steps=str(opts["steps"]), resolution=resolution or models.base_resolution,
        base_resolution=models.base_resolution, up_sampler=opts["up_sampler"], up_steps=str(opts["up_steps"]),
        upsample_temp=float(opts["upsample_temp"]), batch_size=int(opts["batch_size"]), dtype=opts["dtype"],
        device_type=device.type, inception=opts["inception"], kid_subset_size=int(opts["kid_subset_size"]),
        prc_k=int(opts["prc_k"]), random_init=models.random_init, cfg_interval=opts.get("cfg_interval"),
        attention=attention, fast=o.fast, caption_style=opts["caption_style"],
        **interval_fields(opts, o),  # K images per caption and the interval method
        **comparable_fields(o, stats),  # a statistics file's declared protocol, KID's seed
        sfid=spatial_features(o, stats, notes),  # --sfid, or an ADM batch's mu_s / sigma_s
    )  # fmt: skip
    source.prompts = extra_prompts(source.prompts, spec.seed, spec.samples_per_prompt, spec.diversity_prompts)
    check_supported(generator, spec.settings, spec.dtype, device.type, sampling_options(spec, device.type))
    shard = Shard.parse(o.shard)
    return RunPlan(
        options=o, suite=suite, opts=opts, source=source, models=models, spec=spec, device=device, shard=shard,
        worker=Worker.make(shard, dist.rank, dist.world), run_dir=spec.run_dir(Path(o.out or "runs")),
        notes=models.notes + notes, generator=generator, reference_stats=stats,
    )  # fmt: skip


def first_line(plan: RunPlan) -> str:
    """The run's first printed line: which data and which models, loudly."""
    where = plan.source.describe(plan.suite.name)
    if plan.spec.model == "embedded":
        who = "with the EMBEDDED models"
        if plan.models.random_init:
            who += (
                " -- RANDOM-INITIALISED (no trained weights found in "
                f"{os.environ.get('GLIDEBENCH_MODELS') or 'glidebench/assets/models'}): numbers are a plumbing "
                "check, not a result"
            )
    elif plan.options.images or plan.options.images_setting:
        who = f"scoring the images of {', '.join(str(p) for p in plan.generator.folders.values())}"
    elif plan.spec.model == "plugin":
        who = f"with the generator {plan.generator.name} ({plan.options.generator})"
    else:
        who = "with the official GLIDE (filtered) checkpoints"
    return f"glidebench {plan.suite.name}: {where} {who}."


def open_captions_file(coco_root: Path | None, opts: dict[str, Any]) -> Any:
    """The data source of ``--captions-file``."""

    return CaptionsFileSource(opts["captions_file"], coco_root, opts)


def eval_clip_source(text: str) -> Any:
    """The evaluator CLIP source of ``--clip-score-model ARCH:PRETRAINED``."""

    arch, pretrained = parse_clip_score_model(text)
    owner = "OpenAI CLIP" if pretrained == "openai" else f"CLIP {Path(pretrained).name}"
    return OpenClipSource(arch, pretrained, title=f"{owner} {arch}")


def reference_stats(opts: dict[str, Any], resolution: int) -> Any:
    """The loaded ``--reference-stats`` (None without it), checked against the run's resolution, FID resize
    mode and Inception source (the full Inception fingerprint is checked again once the network is loaded)."""
    if not opts.get("reference_stats"):
        return None

    stats = load_stats(opts["reference_stats"], opts.get("reference_protocol"))
    stats.check_protocol(resolution, opts["fid_resize"], features.resolve_inception_source(opts["inception"]))
    stats.metric_options = {
        "k": int(opts.get("prc_k", 3)),
        "kid_subset_size": int(opts.get("kid_subset_size", 1000)),
        "kid_seed": kid_seed(opts.get("kid_seed"), int(opts.get("seed", 0))),
    }
    return stats
