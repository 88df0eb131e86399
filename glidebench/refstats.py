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

A file without a sidecar (one of pytorch-fid's, say) is accepted with a warning in every result row: its
protocol cannot be checked.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SIDECAR_VERSION = 1
NOT_MEASURED_NOTE = (
    "KID and precision/recall not measured: the reference is a statistics file (--reference-stats), which holds "
    "no reference features"
)


class ReferenceStatsError(ValueError):
    """A reference statistics file cannot be used; the message names the file, the problem and the fix."""


def sidecar_path(npz: str | Path) -> Path:
    """``FILE.json`` beside ``FILE.npz``."""
    return Path(npz).with_suffix(".json")


def export_stats(path: str | Path, pool3: np.ndarray, sidecar: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``mu`` and ``sigma`` (float64) of ``pool3`` features [N, D] to ``path`` (.npz) and ``sidecar``
    (plus the count, the feature width and the format version) to ``path`` with .json. Returns both paths."""
    from .metrics.fid import feature_statistics
    from .store import atomic_path, atomic_write_json

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

    @property
    def count(self) -> int:
        """Images the statistics were computed from (0 when the file has no sidecar to say)."""
        return int((self.sidecar or {}).get("count", 0))

    def record(self) -> dict[str, Any]:
        """The provenance's record of the file."""
        return {
            "reference_stats": str(self.path),
            "reference_stats_sha256": self.sha256,
            "reference_stats_sidecar": self.sidecar,
            "reference_images_read": 0,
        }

    def check_protocol(self, resolution: int, resize: str, inception: str | None = None) -> None:
        """Refuse the file when its sidecar names another evaluation resolution, FID resize mode or Inception
        (``inception``: a resolved source name, "torch-fidelity" / "fid-helper", or a full fingerprint)."""
        side = self.sidecar
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


def load_stats(path: str | Path) -> ReferenceStats:
    """Read and check ``path`` (and its sidecar when present); errors name the file and the fix."""
    from glide.checkpoints import sha256_file

    path = Path(path)
    if not path.is_file():
        raise ReferenceStatsError(
            f"reference statistics {path} do not exist; write them with `glidebench prepare coco --coco-root DIR "
            f"--resolution N --export-stats {path}`"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy (one array) under an .npz name
            raise _fail(
                path,
                f"it is a single .npy array (shape {getattr(loaded, 'shape', '?')}), not an .npz archive; save "
                "both with np.savez(FILE, mu=mu, sigma=sigma)",
            )
        with loaded as data:
            missing = [k for k in ("mu", "sigma") if k not in data.files]
            if missing:
                raise _fail(path, f"no {' or '.join(missing)} array (it has {sorted(data.files)})")
            mu, sigma = np.asarray(data["mu"]), np.asarray(data["sigma"])
    except ReferenceStatsError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # BadZipFile: truncated, not an OSError
        raise _fail(path, f"not a readable .npz ({type(e).__name__}: {e}); it may be truncated") from e
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise _fail(path, f"mu has shape {mu.shape} and sigma {sigma.shape}")
    if not (np.issubdtype(mu.dtype, np.floating) and np.issubdtype(sigma.dtype, np.floating)):
        raise _fail(path, f"mu and sigma must be floating point, got {mu.dtype} and {sigma.dtype}")
    mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise _fail(path, "mu or sigma holds NaN or inf")
    from .metrics.fid import CovarianceError, check_covariance

    try:  # symmetric and positive semi-definite within rounding: else FID is meaningless, even negative
        check_covariance(sigma, f"reference statistics {path}")
    except CovarianceError as e:
        raise ReferenceStatsError(
            f"{e}. Re-export the statistics (`glidebench prepare coco --export-stats`) or use the reference images"
        ) from e
    side_file = sidecar_path(path)
    sidecar, warnings = None, []
    if side_file.is_file():
        try:
            sidecar = json.loads(side_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ReferenceStatsError(
                f"sidecar {side_file} of the reference statistics is not JSON ({e}); restore it or delete it (the "
                "protocol then goes unchecked)"
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
    else:
        warnings.append(
            f"reference statistics {path.name} have no sidecar ({side_file.name}): their protocol (resolution, "
            "resize, Inception, count) is unchecked"
        )
    return ReferenceStats(path, mu, sigma, sha256_file(path), sidecar, warnings)


def stats_setting_metrics(
    gen: dict[str, np.ndarray], stats: ReferenceStats, clip_pair: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[dict[str, float], list[str]]:
    """One setting's metrics against reference statistics (see the module docstring). Returns (metrics,
    warnings) with the keys of :func:`glidebench.results.setting_metrics`."""
    from .metrics import clip_score, feature_statistics, frechet_distance, inception_score
    from .metrics.fid import FID_MIN_SAMPLES

    fake = gen["pool3"]
    if len(fake) < 2:
        raise ReferenceStatsError("FID needs at least 2 generated images; use --num-samples >= 2")
    if fake.shape[1] != stats.mu.shape[0]:
        raise ReferenceStatsError(
            f"reference statistics {stats.path} have {stats.mu.shape[0]} features but the run's Inception gives "
            f"{fake.shape[1]}: they come from another network or layer"
        )
    mu, sigma = feature_statistics(fake)
    notes = [NOT_MEASURED_NOTE]
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
    if "logits" in gen:
        out["is_mean"], out["is_std"] = inception_score(gen["logits"], splits=min(10, len(fake)))
    else:
        notes.append("IS not computed: the offline Inception (fid-helper) has no logits head")
    if clip_pair is not None:
        cs = clip_score(*clip_pair)
        for key in ("clip_score", "clip_score_clamped", "clip_score_2p5"):
            out[key] = cs[key]
    return out, notes + list(stats.warnings)


def check_extractor(stats: ReferenceStats, extractor: Any) -> None:
    """Refuse ``stats`` when their sidecar names another Inception fingerprint than ``extractor``'s (the
    resize mode is part of that fingerprint)."""
    stats.check_protocol(
        int((stats.sidecar or {}).get("resolution", 0)),
        (stats.sidecar or {}).get("fid_resize", "tf-bilinear"),
        getattr(extractor, "fingerprint", None),
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
    from .data.coco import PREPROCESS

    path = Path(path)
    if per_resolution:
        path = path.with_name(f"{path.stem}-{resolution}px.npz")
    sidecar = {
        "dataset": "MS-COCO",
        "split": coco.split,
        "annotations_sha256": coco.annotations_sha256,
        "crop": "center square crop",
        "resize": f"PIL bicubic (antialiased) to {resolution} px ({PREPROCESS})",
        "resolution": int(resolution),
        "fid_resize": getattr(extractor, "resize", "tf-bilinear"),
        "inception": extractor.name,
        "inception_source": getattr(extractor, "source", None),
        "inception_fingerprint": extractor.fingerprint,
        "reference_fingerprint": reference_fp,
    }
    npz, _ = export_stats(path, pool3, sidecar)
    return npz
