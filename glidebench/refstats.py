"""Reference statistics files: FID's reference Gaussian (mu, Sigma) written once and shared, read instead of
reference images.

Owns the file format and its checks:

- ``FILE.npz`` holds ``mu`` [D] and ``sigma`` [D, D] as float64, the layout pytorch-fid and clean-fid read and
  write (``np.savez(path, mu=mu, sigma=sigma)``), so their files can be used here and ours there;
- ``FILE.json`` (the sidecar, beside it) names the protocol that produced them: dataset, split, crop, resize
  to the evaluation resolution, the FID resize mode to 299 px, the Inception weights (name, source and
  fingerprint), the image count and the reference set's fingerprint;
- :func:`export_stats` writes both (atomically) from reference features (``glidebench prepare coco
  --export-stats FILE.npz``); :func:`load_stats` reads and checks them (keys, shapes, dtypes, finiteness,
  symmetry) and records the file's SHA-256; :meth:`ReferenceStats.check_protocol` refuses a file whose sidecar
  names another resolution, resize mode or Inception than the run's, saying what differs;
- :func:`stats_setting_metrics`: one setting's metrics against the statistics: FID from (mu, Sigma); KID and
  precision/recall need the reference features, so they are NaN with a note; IS and the CLIP scores do not
  need references and are computed as usual.

A file without a sidecar (one of pytorch-fid's, clean-fid's, an ADM evaluator batch) is used only when the run
declares what made it (``--reference-protocol RESIZE:PX``, e.g. ``tf-bilinear:256``); the declaration is checked
against the run like a sidecar and recorded in the spec. Without it the file is refused, naming the format its
keys show (:mod:`glidebench.statfiles`). ``.pt`` / ``.pkl`` files are refused without being unpickled. Besides
mu / sigma, a file may bring sFID's spatial statistics (``mu_s`` / ``sigma_s`` of an ADM batch: the run's sFID
is then measured against them) or features (``pool3``, clean-fid's ``feats``: mu / sigma are computed from them
and KID and precision/recall are measured too).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glide.checkpoints import sha256_file

from . import statfiles as F
from .features import FID_RESIZE_MODES
from .metrics import (
    clip_score,
    frechet_distance,
    inception_score,
    kid_from_features,
    precision_recall,
)
from .metrics.fid import FID_MIN_SAMPLES, CovarianceError, check_covariance, feature_statistics
from .metrics.sfid import sfid_from_statistics
from .statfiles import ReferenceStatsError, coco_sidecar, recognise, resolution_path, sidecar_path
from .store import atomic_path, atomic_write_json

SIDECAR_VERSION = 1
NOT_MEASURED_NOTE = (
    "KID and precision/recall not measured: the reference is a statistics file (--reference-stats), which holds "
    "no reference features"
)


PROTOCOL_FORM = "--reference-protocol RESIZE:PX (RESIZE tf-bilinear or clean, PX the evaluation resolution)"


def parse_protocol(text: str) -> dict[str, Any]:
    """``"tf-bilinear:256"`` -> {"fid_resize": "tf-bilinear", "resolution": 256}; errors name the option."""

    resize, _, px = str(text).strip().partition(":")
    if resize not in FID_RESIZE_MODES or not px.isdigit() or int(px) < 1:
        raise ReferenceStatsError(
            f"--reference-protocol {text!r}: give RESIZE:PX with RESIZE one of {FID_RESIZE_MODES} (how the images "
            "were resized to Inception's 299 px: tf-bilinear for pytorch-fid, torch-fidelity, the ADM evaluator and "
            "clean-fid's legacy_tensorflow mode; clean for clean-fid's clean mode) and PX the resolution the "
            "images had before it, e.g. tf-bilinear:256"
        )
    return {"fid_resize": resize, "resolution": int(px)}


def export_stats(path: str | Path, pool3: np.ndarray, sidecar: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``mu`` and ``sigma`` (float64) of ``pool3`` features [N, D] to ``path`` (.npz) and ``sidecar``
    (plus the count, the feature width and the format version) to ``path`` with .json. Returns both paths."""

    path = Path(path)
    if path.suffix != ".npz":
        raise ReferenceStatsError(f"--export-stats {path}: give a .npz file name (the sidecar is its .json)")
    mu, sigma = feature_statistics(pool3)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mu=mu.astype(np.float64), sigma=sigma.astype(np.float64))
    record = dict(sidecar) | {
        "format": "glidebench reference statistics",
        "format_version": SIDECAR_VERSION,
        "count": int(len(pool3)),
        "feature_dim": int(mu.shape[0]),
        "layout": "npz with mu [D] and sigma [D, D], float64 (pytorch-fid / clean-fid layout)",
    }
    side = sidecar_path(path)
    atomic_write_json(side, record)
    return path, side


@dataclass
class ReferenceStats:
    """A loaded statistics file: ``mu``, ``sigma``, its SHA-256, its sidecar (None when it has none)."""

    path: Path
    mu: np.ndarray
    sigma: np.ndarray
    sha256: str
    sidecar: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    file_format: str = ""  # which tool's layout the keys show (glidebench.statfiles)
    declared: dict[str, Any] | None = None  # --reference-protocol of a file without a sidecar
    mu_s: np.ndarray | None = None  # sFID's spatial statistics (an ADM batch)
    sigma_s: np.ndarray | None = None
    features: np.ndarray | None = None  # reference pool3 features [N, D] (KID, precision/recall)
    images: int = 0  # images in an ADM batch's arr_0
    metric_options: dict[str, Any] = field(default_factory=dict)  # k, kid_subset_size, kid_seed of the run

    @property
    def count(self) -> int:
        """Images the statistics were computed from (0 when nothing in or beside the file says)."""
        if self.features is not None:
            return len(self.features)
        return int((self.sidecar or {}).get("count", 0)) or self.images

    @property
    def protocol(self) -> dict[str, Any] | None:
        """What made the file: its sidecar, else the run's declaration (None: neither)."""
        return self.sidecar if self.sidecar is not None else self.declared

    def record(self) -> dict[str, Any]:
        """The provenance's record of the file."""
        return {
            "reference_stats": str(self.path),
            "reference_stats_sha256": self.sha256,
            "reference_stats_sidecar": self.sidecar,
            "reference_stats_format": self.file_format,
            "reference_protocol_declared": self.declared,
            "reference_spatial_statistics": self.mu_s is not None,
            "reference_features": None if self.features is None else list(self.features.shape),
            "reference_images_read": 0,
        }

    def check_protocol(self, resolution: int, resize: str, inception: str | None = None) -> None:
        """Refuse the file when its sidecar names another evaluation resolution, FID resize mode or Inception
        (``inception``: a resolved source name, "torch-fidelity" / "fid-helper", or a full fingerprint)."""
        side = self.protocol
        if side is None:
            return
        differ = []
        if int(side.get("resolution", resolution)) != int(resolution):
            differ.append(
                f"resolution {side.get('resolution')} px (the run: {resolution} px; pass --resolution)"
            )
        if side.get("fid_resize", "tf-bilinear") != resize:
            differ.append(
                f"FID resize {side.get('fid_resize', 'tf-bilinear')!r} (the run: {resize!r}; pass --fid-resize)"
            )
        if inception is not None:
            key = "inception_fingerprint" if ":" in inception else "inception_source"
            theirs = side.get(key)
            if theirs is not None and theirs != inception:
                differ.append(
                    f"Inception {key.split('_')[1]} {theirs!r} (the run: {inception!r}; pass --inception)"
                )
        if differ and self.sidecar is None:
            raise ReferenceStatsError(
                f"reference statistics {self.path}: --reference-protocol declares another protocol than the run's: "
                + "; ".join(differ).replace("resolution", "declared resolution", 1)
                + ". Features of two protocols give a wrong FID (clean-fid's clean statistics in a tf-bilinear run: "
                "+13 %); run under the file's protocol"
            )
        if differ:
            raise ReferenceStatsError(
                f"reference statistics {self.path} were computed under another protocol: "
                + "; ".join(differ)
                + ". Re-export them with `glidebench prepare coco --export-stats` under the run's options, or run "
                "with the file's options"
            )


# The sidecar's fields that are read, and the JSON types each must have (None: the field may be null).
SIDECAR_TYPES: dict[str, tuple[type, ...]] = {
    "feature_dim": (int,), "count": (int,), "resolution": (int,), "fid_resize": (str,),
    "inception_source": (str, type(None)), "inception_fingerprint": (str, type(None)), "format_version": (int,),
}  # fmt: skip


def check_sidecar_types(sidecar: dict[str, Any], side_file: Path) -> None:
    """Refuse a sidecar whose fields have the wrong JSON type (a list where a count goes, say), naming the
    field, so that no TypeError or ValueError from ``int()`` surfaces later."""
    for key, types in SIDECAR_TYPES.items():
        if key not in sidecar:
            continue
        v = sidecar[key]
        if not isinstance(v, types) or isinstance(v, bool) or (int in types and isinstance(v, int) and v < 0):
            want = " or ".join("null" if t is type(None) else {int: "a non-negative integer"}.get(t, "a string")
                               for t in types)  # fmt: skip
            raise ReferenceStatsError(
                f"sidecar {side_file} of the reference statistics: {key} is {json.dumps(v)}, not {want}; restore "
                "the sidecar written with the statistics or delete it (the protocol then goes unchecked)"
            )


def _fail(path: Path, problem: str) -> ReferenceStatsError:
    return ReferenceStatsError(
        f"reference statistics {path}: {problem}. Expected an .npz with mu [D] and sigma [D, D] (float64), as "
        "written by `glidebench prepare coco --export-stats`, pytorch-fid or clean-fid"
    )


def _npy_shape(zf: zipfile.ZipFile, name: str) -> tuple[int, ...]:
    """The shape in the header of member ``name``.npy, read without reading its data."""
    with zf.open(f"{name}.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, _ = read(f)
    return tuple(int(x) for x in shape)


def _not_npz(path: Path, kind: str) -> ReferenceStatsError:

    what = {"torch": F.TORCH_FORMAT, "pickle": F.PICKLE_FORMAT}.get(kind, "not a zip archive of .npy arrays")
    return ReferenceStatsError(
        f"reference statistics {path}: not an npz of mu/sigma: it is {what}, and it is not unpickled here (a pickle "
        "can run any code). Where you trust the file, load it and save its mean and covariance with "
        "np.savez(FILE.npz, mu=mu, sigma=sigma) (or its features with np.savez(FILE.npz, pool3=features)), then "
        "pass that with --reference-protocol"
    )


def _floats(path: Path, data: Any, names: tuple[str, ...]) -> list[np.ndarray]:
    out = [np.asarray(data[k]) for k in names]
    for name, a in zip(names, out, strict=True):
        if not np.issubdtype(a.dtype, np.floating):
            raise _fail(path, f"{name} must be floating point, got {a.dtype}")
        if not np.isfinite(a).all():
            raise _fail(path, f"{name} holds NaN or inf")
    return [a.astype(np.float64) for a in out]


def _read_npz(path: Path, keys: list[str]) -> dict[str, Any]:
    """The arrays of the .npz ``path`` that glidebench uses (see the module docstring), checked."""

    fmt = F.npz_format(keys)
    out: dict[str, Any] = {"file_format": fmt or "an .npz of unknown layout"}
    if fmt == F.ADM_SAMPLES_FORMAT:
        raise _fail(path, f"it is {fmt}; score such images with `--images DIR`, or give the reference batch that "
                    "holds mu and sigma")  # fmt: skip
    if fmt is None:
        missing = " or ".join(k for k in ("mu", "sigma") if k not in keys)
        raise _fail(path, f"no {missing} array (it has {sorted(keys)})")
    with np.load(path, allow_pickle=False) as data:
        if fmt in (F.KID_FORMAT, F.FEATURES_FORMAT):
            key = "feats" if fmt == F.KID_FORMAT else "pool3"
            (feats,) = _floats(path, data, (key,))
            if feats.ndim != 2 or len(feats) < 2:
                raise _fail(path, f"{key} has shape {feats.shape}, not [N >= 2, D] features")
            out["features"] = feats
            out["mu"], out["sigma"] = feature_statistics(feats)
            return out
        out["mu"], out["sigma"] = _floats(path, data, ("mu", "sigma"))
        if fmt == F.ADM_FORMAT:
            out["mu_s"], out["sigma_s"] = _floats(path, data, ("mu_s", "sigma_s"))
    if "arr_0" in keys:
        with zipfile.ZipFile(path) as zf:
            shape = _npy_shape(zf, "arr_0")
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise _fail(path, f"arr_0 has shape {shape}, not the ADM evaluator's square images [N, H, W, 3]")
        out["images"], out["image_size"] = shape[0], shape[1]
    return out


def _check_moments(path: Path, mu: np.ndarray, sigma: np.ndarray, what: str) -> None:

    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise _fail(path, f"{what[0]} has shape {mu.shape} and {what[1]} {sigma.shape}")
    try:  # symmetric and positive semi-definite within rounding: else FID is meaningless, even negative
        check_covariance(
            sigma, f"reference statistics {path}" + ("" if what[1] == "sigma" else f" ({what[1]})")
        )
    except CovarianceError as e:
        raise ReferenceStatsError(
            f"{e}. Re-export the statistics (`glidebench prepare coco --export-stats`) or use the reference images"
        ) from e


def load_stats(path: str | Path, declared: str | None = None) -> ReferenceStats:
    """Read and check ``path`` (and its sidecar when present); errors name the file and the fix. ``declared``:
    ``--reference-protocol RESIZE:PX``, required for a file without a sidecar (see the module docstring)."""

    path = Path(path)
    if not path.is_file():
        raise ReferenceStatsError(
            f"reference statistics {path} do not exist; write them with `glidebench prepare coco --coco-root DIR "
            f"--resolution N --export-stats {path}`"
        )
    kind, keys = recognise(path)
    if kind == "npy":  # a .npy (one array) under an .npz name
        raise _fail(path, "it is a single .npy array, not an .npz archive; save both with np.savez(FILE, mu=mu, "
                    "sigma=sigma)")  # fmt: skip
    if kind in ("torch", "pickle"):
        raise _not_npz(path, kind)
    if kind != "npz":
        raise _fail(path, "not a readable .npz (not a zip archive of .npy arrays); it may be truncated")
    try:
        arrays = _read_npz(path, keys)
    except ReferenceStatsError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:  # BadZipFile: truncated
        raise _fail(path, f"not a readable .npz ({type(e).__name__}: {e}); it may be truncated") from e
    mu, sigma = arrays.pop("mu"), arrays.pop("sigma")
    _check_moments(path, mu, sigma, ("mu", "sigma"))
    if "mu_s" in arrays:
        _check_moments(path, arrays["mu_s"], arrays["sigma_s"], ("mu_s", "sigma_s"))
    side_file = sidecar_path(path)
    sidecar, fmt = None, arrays["file_format"]
    if side_file.is_file():
        try:
            sidecar = json.loads(side_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ReferenceStatsError(
                f"sidecar {side_file} of the reference statistics is not JSON ({e}); restore it, or delete it and "
                f"declare the protocol with {PROTOCOL_FORM}"
            ) from e
        if not isinstance(sidecar, dict):
            raise ReferenceStatsError(f"sidecar {side_file} must hold a JSON object")
        check_sidecar_types(sidecar, side_file)
        dim = sidecar.get("feature_dim")
        if dim is not None and int(dim) != mu.shape[0]:
            raise ReferenceStatsError(
                f"sidecar {side_file} says {dim} features but {path} holds {mu.shape[0]}: the two files do not "
                "belong together"
            )
    elif declared is None:
        size = arrays.get("image_size")
        hint = (
            f" (its arr_0 holds {size} px images: tf-bilinear:{size} for the ADM evaluator's)" if size else ""
        )
        raise ReferenceStatsError(
            f"reference statistics {path} ({fmt}) have no sidecar ({side_file.name}) saying how they were made; "
            f"declare it with {PROTOCOL_FORM}{hint}, or re-export them with `glidebench prepare coco --export-stats`"
        )
    stats = ReferenceStats(path, mu, sigma, sha256_file(path), sidecar, file_format=fmt, **{
        k: arrays[k] for k in ("mu_s", "sigma_s", "features", "images") if k in arrays})  # fmt: skip
    if declared is not None:
        stats.declared = parse_protocol(declared)
        size = arrays.get("image_size")
        if size is not None and size != stats.declared["resolution"]:
            raise ReferenceStatsError(
                f"--reference-protocol {declared}: the ADM batch {path} holds {size} px images (arr_0), not "
                f"{stats.declared['resolution']} px; declare {stats.declared['fid_resize']}:{size}"
            )
        if sidecar is not None:
            stats.check_protocol(stats.declared["resolution"], stats.declared["fid_resize"])
    return stats


def stats_setting_metrics(
    gen: dict[str, np.ndarray], stats: ReferenceStats, clip_pair: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[dict[str, float], list[str]]:
    """One setting's metrics against reference statistics (see the module docstring). Returns (metrics,
    warnings) with the keys of :func:`glidebench.runner.results.setting_metrics`."""

    fake = gen["pool3"]
    if len(fake) < 2:
        raise ReferenceStatsError("FID needs at least 2 generated images; use --num-samples >= 2")
    if fake.shape[1] != stats.mu.shape[0]:
        raise ReferenceStatsError(
            f"reference statistics {stats.path} have {stats.mu.shape[0]} features but the run's Inception gives "
            f"{fake.shape[1]}: they come from another network or layer"
        )
    mu, sigma = feature_statistics(fake)
    notes = [NOT_MEASURED_NOTE] if stats.features is None else []
    if len(fake) < FID_MIN_SAMPLES:
        notes.append(f"FID from {len(fake)} < 2048 samples: biased and unstable (the protocol uses 30k)")
    fid = frechet_distance(mu, sigma, stats.mu, stats.sigma)
    if not fid >= -1e-6 * max(1.0, float(np.trace(sigma) + np.trace(stats.sigma))):  # NaN too
        raise ReferenceStatsError(
            f"FID against reference statistics {stats.path} came out as {fid:.6g}: a negative FID (or NaN) is "
            "impossible for covariance matrices, so the statistics or the features are broken; nothing was written"
        )
    out = {
        "fid": max(fid, 0.0),
        "kid_mean": math.nan, "kid_std": math.nan, "precision": math.nan, "recall": math.nan,
        "is_mean": math.nan, "is_std": math.nan,
        "clip_score": math.nan, "clip_score_clamped": math.nan, "clip_score_2p5": math.nan,
    }  # fmt: skip
    if stats.features is not None:
        out |= _from_reference_features(fake, stats)
    if stats.mu_s is not None and "spatial" in gen:
        out["sfid"] = sfid_from_statistics(gen["spatial"], stats.mu_s, stats.sigma_s)
    elif stats.mu_s is not None:
        notes.append("sFID not measured: the run's Inception gave no spatial (mixed_6/conv) features")
    if "logits" in gen:
        out["is_mean"], out["is_std"] = inception_score(gen["logits"], splits=min(10, len(fake)))
    else:
        notes.append("IS not computed: the offline Inception (fid-helper) has no logits head")
    if clip_pair is not None:
        cs = clip_score(*clip_pair)
        for key in ("clip_score", "clip_score_clamped", "clip_score_2p5"):
            out[key] = cs[key]
    return out, notes + list(stats.warnings)


def _from_reference_features(fake: np.ndarray, stats: ReferenceStats) -> dict[str, float]:
    """KID and precision/recall against the features a file brought (``pool3``, clean-fid's ``feats``), with
    the run's options (``stats.metric_options``: k, kid_subset_size, kid_seed; torch-fidelity's defaults
    otherwise: k = 3, subsets of 1000, seed 0)."""

    real, opts = stats.features, stats.metric_options
    if real.shape[1] != fake.shape[1]:
        raise ReferenceStatsError(
            f"reference features {stats.path} are {real.shape[1]}-d, the run's {fake.shape[1]}-d"
        )
    k, m = int(opts.get("k", 3)), min(int(opts.get("kid_subset_size", 1000)), len(fake), len(real))
    kid_mean, kid_std = kid_from_features(fake, real, subset_size=m, seed=int(opts.get("kid_seed", 0)))
    if min(len(fake), len(real)) <= k:
        raise ReferenceStatsError(
            f"precision/recall with k={k} needs more than {k} images per set; use more samples"
        )
    pr = precision_recall(real, fake, k=k)
    return {"kid_mean": kid_mean, "kid_std": kid_std, "precision": pr["precision"], "recall": pr["recall"]}


def check_extractor(stats: ReferenceStats, extractor: Any) -> None:
    """Refuse ``stats`` when their sidecar names another Inception fingerprint than ``extractor``'s (the
    resize mode is part of that fingerprint)."""
    side = stats.protocol or {}
    stats.check_protocol(
        int(side.get("resolution", 0)),
        side.get("fid_resize", "tf-bilinear"),
        getattr(extractor, "network_fingerprint", getattr(extractor, "fingerprint", None)),
    )


def export_coco_stats(
    path: str | Path,
    pool3: np.ndarray,
    coco: Any,
    resolution: int,
    extractor: Any,
    reference_fp: str,
    per_resolution: bool = False,
) -> Path:
    """``prepare coco --export-stats``: the statistics of a COCO reference set at ``resolution`` and their
    sidecar (``per_resolution``: the file name gets ``-<res>px`` before .npz). Returns the .npz path."""
    path = resolution_path(path, resolution, per_resolution)
    npz, _ = export_stats(path, pool3, coco_sidecar(coco, resolution, extractor, reference_fp))
    return npz
