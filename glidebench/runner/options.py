"""The options of a generate-and-measure run: what the user asked for, typed, and the suite options it resolves to.

Owns the first step from what a user asked for to what a run does:

    RunOptions (the command line's values, typed; None = not given)
      + the suite file's profile for the data kind < its preset < the flags    (:func:`resolve_options`)
      + the options that make a number comparable with a published one         (:func:`resolve_comparable`)

and the RunSpec fields that follow from options alone (:func:`interval_fields`, :func:`comparable_fields`) and
the prompt expansion of K images per caption (:func:`extra_prompts`). :mod:`.plan` turns the result into a
RunPlan. The argparse Namespace ends in :meth:`RunOptions.from_args`; everything after it takes a
``RunOptions`` or a ``RunPlan``. Suites that run the coco-fid stages several times (nfe) derive options with
``dataclasses.replace``.

The comparable options and the modules that implement them:

- ``--captions-file FILE`` -> :class:`glidebench.data.captions_file.CaptionsFileSource` (MS-COCO profile);
- ``--reference-stats FILE.npz`` -> :class:`glidebench.refstats.ReferenceStats`, checked against the run's
  resolution, FID resize mode and Inception source before anything is generated; ``--reference-protocol
  RESIZE:PX`` declares what made a file without a sidecar (recorded in the spec);
- ``--kid-seed N`` -> KID's subset seed (the spec's ``kid_seed``; the run's seed when not given);
- ``--fid-resize tf-bilinear|clean`` -> the Inception extractor's resize (:mod:`glidebench.features`);
- ``--clip-score-model ARCH:PRETRAINED`` -> the evaluator CLIP source (:mod:`glidebench.clip_eval`);
- ``--log-to tensorboard|wandb`` -> checked here (the package must be importable) so a run never fails at its
  end for a missing logger (:mod:`glidebench.tracking` writes).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..clip_eval import parse_clip_score_model
from ..data.sources import Prompt
from ..features import FID_RESIZE_MODES, check_resize_mode
from ..metrics import bootstrap as B
from ..refstats import parse_protocol
from ..spec import parse_interval, parse_scales
from ..suites import SuiteDef
from ..tracking import check_log_to

SUITE = "coco-fid"


# option keys of a suite profile that a flag of the same name overrides
_FLAG_KEYS = (
    "captions", "num_samples", "reference_size", "seed", "sampler", "steps", "resolution", "up_sampler",
    "up_steps", "upsample_temp", "batch_size", "dtype", "inception", "attention",
)  # fmt: skip


_MINIMA = {"num_samples": 1, "reference_size": 0, "limit": 1, "seed": 0, "batch_size": 1, "feature_batch_size": 1,
           "kid_seed": 0}  # fmt: skip


_MEANING = {"reference_size": " (0 = the whole split)", "limit": " (leave it out for the suite's full size)"}


DEVICE_TYPES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class RunOptions:
    """What the user asked for (``glidebench run coco-fid`` flags); None means "the suite's default"."""

    suite: str = SUITE
    preset: str | None = None
    model: str | None = None
    generator: str | None = None  # module.path:factory, an entry-point name, or diffusers:PATH_OR_ID
    generator_args: str | None = None  # key=value,... for the generator's factory
    images: str | None = None  # a folder of <index>.png|jpg|webp (or of one sub-folder per setting id)
    images_setting: tuple[str, ...] | None = None  # NAME=DIR per setting
    data: str | None = None
    coco_root: str | None = None
    coco_split: str | None = None
    embedded_split: str | None = None
    captions: str | None = None
    caption_style: str | None = None
    num_samples: int | None = None
    samples_per_prompt: int | None = None  # K images per diversity caption (intra-caption diversity)
    diversity_prompts: int | None = None  # M: how many of the first prompts get K images (0 = all)
    bootstrap_resamples: int | None = None  # resamples of the bootstrap intervals (0 = no intervals)
    intervals: str | None = None  # the interval method: jackknife (default) or bootstrap
    reference_size: int | None = None
    limit: int | None = None
    seed: int | None = None
    cfg: str | None = None
    clip: str | None = None
    unguided: bool = False
    cfg_interval: str | None = None
    sampler: str | None = None
    steps: str | None = None
    resolution: str | None = None
    up_sampler: str | None = None
    up_steps: str | None = None
    upsample_temp: float | None = None
    attention: str | None = None
    fast: bool = False  # GLIDE on the fast inference path (glide.fast)
    batch_size: int | None = None
    device: str | None = None
    dtype: str | None = None
    out: str = "runs"
    shard: str | None = None
    merge: bool = False
    features_only: bool = False  # generate, then compute and cache every feature file; no metrics, no report
    inception: str | None = None
    feature_batch_size: int | None = None
    profile: bool = False
    progress: bool = False
    quiet: bool = False
    no_report: bool = False
    dry_run: bool = False
    # numbers comparable with published ones (glidebench.comparable): other captions, statistics, resize, CLIP
    captions_file: str | None = None  # .csv / .jsonl / .txt caption list
    reference_stats: str | None = None  # FILE.npz of mu / sigma instead of reference images
    reference_protocol: str | None = None  # RESIZE:PX that made a statistics file without a sidecar
    kid_seed: int | None = None  # KID's subset seed (None: the run's seed; 2020: torch-fidelity's)
    fid_resize: str | None = None  # tf-bilinear (default) | clean
    sfid: bool = False  # sFID too (Inception's spatial features); on by itself against an ADM batch
    clip_score_model: str | None = None  # ARCH:PRETRAINED of open_clip
    log_to: str | None = None  # tensorboard | wandb
    stage_threads: Any = None  # threads.StageThreads, the CLI's; None: torch's count is left as it is

    def __post_init__(self) -> None:
        for name, least in _MINIMA.items():
            v = getattr(self, name)
            if v is not None and v < least:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= {least}, got {v}{_MEANING.get(name, '')}"
                )
        if self.upsample_temp is not None and not self.upsample_temp > 0:
            raise ValueError(f"--upsample-temp must be > 0, got {self.upsample_temp}")
        if self.fast and (self.generator or self.images or self.images_setting):
            raise ValueError(
                "--fast is GLIDE's fast inference path; leave it out with --generator or --images"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The run options in ``args`` (attributes it lacks or holds as None keep their defaults)."""
        given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in given.items() if v is not None})


def resolve_options(o: RunOptions, suite: SuiteDef, data: str) -> dict[str, Any]:
    """The suite's profile for ``data`` < ``o.preset`` < the flags in ``o``."""
    opts = suite.options(data, o.preset)
    opts |= {k: getattr(o, k) for k in _FLAG_KEYS + tuple(interval_fields({})) if getattr(o, k) is not None}
    if data == "coco" and o.coco_split:
        opts["split"] = o.coco_split
    if o.embedded_split:
        if data != "embedded":
            raise ValueError("--embedded-split applies to the embedded set; for MS-COCO use --coco-split")
        opts["split"] = o.embedded_split
    opts["cfg"] = parse_scales(o.cfg, "--cfg") if o.cfg is not None else list(opts["cfg"])
    opts["clip_explicit"] = o.clip is not None
    opts["clip"] = parse_scales(o.clip, "--clip") if o.clip is not None else list(opts["clip"])
    if o.cfg_interval is not None:
        opts["cfg_interval"] = o.cfg_interval or None  # '' = every step
    if opts.get("cfg_interval") is not None:
        opts["cfg_interval"] = parse_interval(opts["cfg_interval"], "--cfg-interval")
    opts["caption_style"] = o.caption_style or opts.get("caption_style", "exact")
    if o.limit:
        opts["num_samples"] = min(int(opts["num_samples"]), int(o.limit))
    return opts


def check_comparable(o: Any) -> None:
    """Refuse contradictory or unusable options of ``o`` (a RunOptions) with the option named."""

    if o.fid_resize is not None:
        check_resize_mode(o.fid_resize)
    if o.captions_file is not None:
        if o.data == "embedded":
            raise ValueError("--captions-file holds MS-COCO-style captions; leave out --data embedded")
        if o.captions is not None:
            raise ValueError("--captions-file gives the captions itself; leave out --captions")
    if o.reference_size is not None and (o.captions_file is not None or o.reference_stats is not None):
        given, what = (
            ("--reference-stats", "the statistics in that file")
            if o.reference_stats is not None
            else ("--captions-file", "the MS-COCO images of its rows' image ids")
        )
        raise ValueError(
            f"--reference-size {o.reference_size} does not apply with {given}: the references are {what}; "
            "leave out --reference-size"
        )
    if o.reference_stats is not None and not str(o.reference_stats).endswith(".npz"):
        raise ValueError(
            f"--reference-stats {o.reference_stats}: give the .npz file (its sidecar is the .json)"
        )
    if o.reference_protocol is not None:
        if o.reference_stats is None:
            raise ValueError(
                "--reference-protocol declares what made a --reference-stats file; give the file too"
            )
        parse_protocol(o.reference_protocol)
    if o.clip_score_model is not None:
        parse_clip_score_model(o.clip_score_model)
    check_log_to(o.log_to)


def resolve_comparable(o: Any, opts: dict[str, Any]) -> None:
    """Put the options of ``o`` that the data source and the spec read into ``opts``."""
    opts["fid_resize"] = o.fid_resize or opts.get("fid_resize", FID_RESIZE_MODES[0])
    opts["captions_file"] = o.captions_file
    opts["reference_stats"] = o.reference_stats
    opts["reference_protocol"] = o.reference_protocol
    if o.kid_seed is not None:
        opts["kid_seed"] = o.kid_seed
    if o.captions_file:
        opts["captions"] = "file"


def kid_seed(kid_seed: int | None, seed: int) -> int:
    """KID's subset seed: ``--kid-seed`` when given, else the run's seed (as before the option existed)."""
    return int(seed if kid_seed is None else kid_seed)


def comparable_fields(o: Any, stats: Any) -> dict[str, Any]:
    """The RunSpec fields of these options: the declared protocol of a statistics file without a sidecar
    (canonical ``RESIZE:PX``) and KID's seed."""
    declared = getattr(stats, "declared", None) if stats is not None and stats.sidecar is None else None
    protocol = f"{declared['fid_resize']}:{declared['resolution']}" if declared else ""
    return {"reference_protocol": protocol, "kid_seed": o.kid_seed}


def extra_count(n: int, samples_per_prompt: int, diversity_prompts: int) -> int:
    """Images per setting beyond the protocol's N: (K - 1) more for each of the M diversity captions."""
    return diversity_prompts_used(n, samples_per_prompt, diversity_prompts) * (samples_per_prompt - 1)


def diversity_prompts_used(n: int, samples_per_prompt: int, diversity_prompts: int) -> int:
    """M: the diversity captions (0 when K = 1; ``diversity_prompts`` 0 means all N)."""
    if samples_per_prompt <= 1:
        return 0
    return min(n, diversity_prompts) if diversity_prompts > 0 else n


def diversity_groups(n: int, samples_per_prompt: int, diversity_prompts: int) -> list[list[int]]:
    """The global indices of the K images of each diversity caption j < M: [j, N + j (K-1), ...]."""
    k = samples_per_prompt
    m = diversity_prompts_used(n, k, diversity_prompts)
    return [[j, *range(n + j * (k - 1), n + (j + 1) * (k - 1))] for j in range(m)]


def extra_prompts(prompts: Sequence[Any], seed: int, samples_per_prompt: int, diversity_prompts: int) -> list:
    """``prompts`` (the protocol's N, one per index) followed by the extra draws: index N + j (K-1) + r
    repeats caption j's text with its own seed (seed + index)."""
    n = len(prompts)
    out = list(prompts)
    for g in diversity_groups(n, samples_per_prompt, diversity_prompts):
        p = prompts[g[0]]
        out += [Prompt(i, p.caption, seed + i, f"{p.source} (draw {r + 2} of index {p.index})")
                for r, i in enumerate(g[1:])]  # fmt: skip
    return out


def interval_fields(opts: dict[str, Any], options: Any = None) -> dict[str, Any]:
    """The RunSpec fields of the intervals and diversity from resolved suite options (their defaults where a
    profile has none).
    A quick run (``--limit``) draws one image per caption unless ``--samples-per-prompt`` is given."""
    k = int(opts.get("samples_per_prompt", 1))
    if options is not None and options.limit and options.samples_per_prompt is None:
        k = 1
    return {
        "samples_per_prompt": k,
        "diversity_prompts": int(opts.get("diversity_prompts", 0)),
        "bootstrap_resamples": int(opts.get("bootstrap_resamples", B.DEFAULT_RESAMPLES)),
        "intervals": str(opts.get("intervals", "jackknife")),
    }


def spatial_features(options: Any, stats: Any, notes: list[str]) -> bool:
    """Whether the run's Inception gives sFID's spatial features: ``--sfid``, or on by itself (with a note)
    when the ``--reference-stats`` file is an ADM batch with ``mu_s`` / ``sigma_s``; ``--sfid`` with a statistics
    file that has none is refused (there is nothing to measure sFID against)."""
    adm = stats is not None and getattr(stats, "mu_s", None) is not None
    if options.sfid and stats is not None and not adm:
        raise ValueError(
            f"--sfid: {stats.path} has no mu_s / sigma_s (sFID's reference statistics); give an ADM batch "
            "(`glidebench prepare coco --export-adm`), reference images, or leave out --sfid"
        )
    if adm and not options.sfid:
        notes.append("sFID measured too: the ADM batch of --reference-stats brings its mu_s / sigma_s")
    return bool(options.sfid or adm)
