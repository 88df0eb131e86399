"""The run options that make a number comparable with a published one, resolved for the runner.

Owns the glue between the command line and the modules that implement them:

- ``--captions-file FILE`` -> :class:`glidebench.data.captions_file.CaptionsFileSource` (MS-COCO profile);
- ``--reference-stats FILE.npz`` -> :class:`glidebench.refstats.ReferenceStats`, checked against the run's
  resolution, FID resize mode and Inception source before anything is generated; ``--reference-protocol
  RESIZE:PX`` declares what made a file without a sidecar (recorded in the spec);
- ``--kid-seed N`` -> KID's subset seed (the spec's ``kid_seed``; the run's seed when not given);
- ``--fid-resize tf-bilinear|clean`` -> the Inception extractor's resize (:mod:`glidebench.features`);
- ``--clip-score-model ARCH:PRETRAINED`` -> the evaluator CLIP source (:mod:`glidebench.clip_eval`);
- ``--log-to tensorboard|wandb`` -> checked here (the package must be importable) so a run never fails at its
  end for a missing logger (:mod:`glidebench.tracking` writes).

:func:`check_options` runs first (cheap checks, clear errors naming the option); the runner then calls the
other functions while it resolves its plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .features import FID_RESIZE_MODES, check_resize_mode


def check_options(o: Any) -> None:
    """Refuse contradictory or unusable options of ``o`` (a RunOptions) with the option named."""
    from .tracking import check_log_to

    if o.fid_resize is not None:
        check_resize_mode(o.fid_resize)
    if o.captions_file is not None:
        if o.data == "embedded":
            raise ValueError("--captions-file holds MS-COCO-style captions; leave out --data embedded")
        if o.captions is not None:
            raise ValueError("--captions-file gives the captions itself; leave out --captions")
    if o.reference_stats is not None and not str(o.reference_stats).endswith(".npz"):
        raise ValueError(
            f"--reference-stats {o.reference_stats}: give the .npz file (its sidecar is the .json)"
        )
    if o.reference_protocol is not None:
        from .refstats import parse_protocol

        if o.reference_stats is None:
            raise ValueError(
                "--reference-protocol declares what made a --reference-stats file; give the file too"
            )
        parse_protocol(o.reference_protocol)
    if o.clip_score_model is not None:
        from .clip_eval import parse_clip_score_model

        parse_clip_score_model(o.clip_score_model)
    check_log_to(o.log_to)


def resolve(o: Any, opts: dict[str, Any]) -> None:
    """Put the options of ``o`` that the data source and the spec read into ``opts``."""
    opts["fid_resize"] = o.fid_resize or opts.get("fid_resize", FID_RESIZE_MODES[0])
    opts["captions_file"] = o.captions_file
    opts["reference_stats"] = o.reference_stats
    opts["reference_protocol"] = o.reference_protocol
    if o.kid_seed is not None:
        opts["kid_seed"] = o.kid_seed
    if o.captions_file:
        opts["captions"] = "file"


def open_captions_file(coco_root: Path | None, opts: dict[str, Any]) -> Any:
    """The data source of ``--captions-file``."""
    from .data.captions_file import CaptionsFileSource

    return CaptionsFileSource(opts["captions_file"], coco_root, opts)


def eval_clip_source(text: str) -> Any:
    """The evaluator CLIP source of ``--clip-score-model ARCH:PRETRAINED``."""
    from .clip_eval import parse_clip_score_model
    from .models.sources import OpenClipSource

    arch, pretrained = parse_clip_score_model(text)
    owner = "OpenAI CLIP" if pretrained == "openai" else f"CLIP {Path(pretrained).name}"
    return OpenClipSource(arch, pretrained, title=f"{owner} {arch}")


def reference_stats(opts: dict[str, Any], resolution: int) -> Any:
    """The loaded ``--reference-stats`` (None without it), checked against the run's resolution, FID resize
    mode and Inception source (the full Inception fingerprint is checked again once the network is loaded)."""
    if not opts.get("reference_stats"):
        return None
    from .features import resolve_inception_source
    from .refstats import load_stats

    stats = load_stats(opts["reference_stats"], opts.get("reference_protocol"))
    stats.check_protocol(resolution, opts["fid_resize"], resolve_inception_source(opts["inception"]))
    stats.metric_options = {
        "k": int(opts.get("prc_k", 3)),
        "kid_subset_size": int(opts.get("kid_subset_size", 1000)),
        "kid_seed": kid_seed(opts.get("kid_seed"), int(opts.get("seed", 0))),
    }
    return stats


def kid_seed(kid_seed: int | None, seed: int) -> int:
    """KID's subset seed: ``--kid-seed`` when given, else the run's seed (as before the option existed)."""
    return int(seed if kid_seed is None else kid_seed)


def spec_fields(o: Any, stats: Any) -> dict[str, Any]:
    """The RunSpec fields of these options: the declared protocol of a statistics file without a sidecar
    (canonical ``RESIZE:PX``) and KID's seed."""
    declared = getattr(stats, "declared", None) if stats is not None and stats.sidecar is None else None
    protocol = f"{declared['fid_resize']}:{declared['resolution']}" if declared else ""
    return {"reference_protocol": protocol, "kid_seed": o.kid_seed}
