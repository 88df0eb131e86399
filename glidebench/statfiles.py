"""Statistics and feature files of other tools: recognised without unpickling, and written in their layouts.

Owns the file formats at the boundary with other FID tools (docs/reproducing.md has the table):

- :func:`recognise`: what a file is, from its first bytes and (for zip archives) its member names alone, never
  by loading a pickle: an .npz, a single .npy, a ``torch.save`` archive (torch-fidelity caches its features
  and statistics so), a bare pickle (``.pkl``); for an .npz, :func:`npz_format` names the tool whose keys it has:
  ``mu``/``sigma`` (pytorch-fid, clean-fid, torchmetrics' exported statistics), ``mu``/``sigma``/``mu_s``/
  ``sigma_s`` with or without ``arr_0`` (an ADM evaluator reference batch, guided-diffusion ``evaluations/``),
  ``arr_0`` alone (an ADM sample batch: images, no statistics), ``feats`` (clean-fid's ``_kid.npz``),
  ``pool3`` (glidebench's ``--export-features``);
- :func:`export_adm`: an ADM evaluator batch: ``arr_0`` (the evaluation images, uint8 NHWC, streamed into the
  archive batch by batch, so 40k images at 256 px never sit in memory) with ``mu``, ``sigma`` (pool3) and
  ``mu_s``, ``sigma_s`` (sFID's spatial features), plus glidebench's sidecar beside it (the evaluator ignores
  it); statistics as the evaluator computes them (``np.mean``, ``np.cov(rowvar=False)``);
- :func:`export_features`: ``pool3`` (and ``logits``, ``spatial`` when present) [N, D] float32 with a sidecar, so
  that KID and precision/recall can be computed from files.

Every file is written atomically (:func:`glidebench.store.atomic_path`): a failure leaves nothing. The pieces
that glidebench's own statistics files share with these (the error type, the sidecar's path and protocol record,
per-resolution names) live here too, so that :mod:`glidebench.refstats` builds on this module and not the other
way round.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .data.coco import PREPROCESS, reference_batches
from .features import load_npz_mapped
from .metrics.fid import feature_statistics
from .spec import RunSpec
from .store import ImageStore, atomic_path, atomic_write_json


class ReferenceStatsError(ValueError):
    """A reference statistics file cannot be used; the message names the file, the problem and the fix."""


def sidecar_path(npz: str | Path) -> Path:
    """``FILE.json`` beside ``FILE.npz``."""
    return Path(npz).with_suffix(".json")


def resolution_path(path: str | Path, resolution: int, per_resolution: bool) -> Path:
    """``path``, or with ``-<res>px`` before .npz when several resolutions are exported."""
    path = Path(path)
    return path.with_name(f"{path.stem}-{resolution}px.npz") if per_resolution else path


def coco_sidecar(coco: Any, resolution: int, extractor: Any, reference_fp: str) -> dict[str, Any]:
    """The protocol record of a COCO reference set's files (statistics, ADM batch, features)."""

    return {
        "dataset": "MS-COCO",
        "split": coco.split,
        "annotations_sha256": coco.annotations_sha256,
        "crop": "center square crop",
        "resize": f"PIL bicubic (antialiased) to {resolution} px ({PREPROCESS})",
        "resolution": int(resolution),
        "fid_resize": getattr(extractor, "resize", "tf-bilinear"),
        "inception": extractor.name,
        "inception_source": getattr(extractor, "source", None),
        "inception_fingerprint": getattr(extractor, "network_fingerprint", extractor.fingerprint),
        "reference_fingerprint": reference_fp,
    }


ADM_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
ADM_FORMAT = (
    "an ADM evaluator reference batch (guided-diffusion evaluations/: arr_0, mu, sigma, mu_s, sigma_s)"
)
ADM_SAMPLES_FORMAT = "an ADM evaluator sample batch (arr_0: images only, no statistics)"
PLAIN_FORMAT = "mu/sigma statistics (the layout of pytorch-fid, clean-fid and torchmetrics)"
KID_FORMAT = "clean-fid KID features (_kid.npz: feats)"
FEATURES_FORMAT = "glidebench features (--export-features: pool3)"
TORCH_FORMAT = "a torch.save archive (torch-fidelity caches its features and statistics as such .pt files)"
PICKLE_FORMAT = "a Python pickle"


def recognise(path: Path) -> tuple[str, list[str]]:
    """(kind, member names) of ``path`` from its bytes, nothing unpickled: kind is "npz", "npy", "torch",
    "pickle" or "unknown" (members: the .npz's array names, or the zip's file names for a torch archive)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x93NUMPY"):
        return "npy", []
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "unknown", []
        if any(n.endswith("data.pkl") for n in names):
            return "torch", names
        if names and all(n.endswith(".npy") for n in names):
            return "npz", [n[: -len(".npy")] for n in names]
        return "unknown", names
    if head[:1] == b"\x80":  # pickle protocol 2+ (torch.save's legacy format, pickle.dump)
        return "pickle", []
    return "unknown", []


def npz_format(keys: Iterable[str]) -> str | None:
    """The tool whose layout an .npz with ``keys`` has (None: no known layout)."""
    k = set(keys)
    if set(ADM_KEYS) <= k:
        return ADM_FORMAT
    if {"mu", "sigma"} <= k:
        return PLAIN_FORMAT
    if "arr_0" in k:
        return ADM_SAMPLES_FORMAT
    if "feats" in k:
        return KID_FORMAT
    if "pool3" in k:
        return FEATURES_FORMAT
    return None


def _write_member(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


def _write_images(
    zf: zipfile.ZipFile, image_batches: Iterable[Any], count: int, path: Path
) -> tuple[int, ...]:
    """Stream ``image_batches`` (uint8 [n, 3, H, W]) into ``arr_0.npy`` of ``zf`` as [count, H, W, 3]; returns
    the image shape (H, W, 3). Refuses another count, size or dtype (the caller's atomic write then leaves
    nothing)."""

    written, shape = 0, None
    with zf.open("arr_0.npy", "w", force_zip64=True) as f:
        for batch in image_batches:
            a = np.asarray(batch.cpu() if hasattr(batch, "cpu") else batch)
            if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1] != 3:
                raise ReferenceStatsError(
                    f"{path}: images must be uint8 [n, 3, H, W], got {a.dtype} {a.shape}"
                )
            a = np.ascontiguousarray(a.transpose(0, 2, 3, 1))
            if shape is None:
                shape = a.shape[1:]
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                          "shape": (int(count), *map(int, shape))}  # fmt: skip
                np.lib.format.write_array_header_2_0(f, header)
            if a.shape[1:] != shape:
                raise ReferenceStatsError(
                    f"{path}: images of sizes {shape} and {a.shape[1:]} in one batch file"
                )
            f.write(a.tobytes())
            written += len(a)
    if written != count:
        raise ReferenceStatsError(f"{path}: {written} images read, {count} expected; nothing written")
    return tuple(shape or ())


def export_adm(
    path: str | Path,
    image_batches: Iterable[Any],
    count: int,
    pool3: np.ndarray | None,
    spatial: np.ndarray | None,
    sidecar: dict[str, Any],
) -> tuple[Path, Path]:
    """Write the ADM batch ``path`` (.npz): ``arr_0`` from ``image_batches`` (uint8 [n, 3, H, W] tensors or
    arrays, ``count`` images in all, stored NHWC), and the statistics of ``pool3`` [count, 2048] and ``spatial``
    [count, 2023] (both None: a sample batch, images only, whose statistics the evaluator computes itself); the
    sidecar ``path`` with .json. Returns both paths."""

    path = Path(path)
    if path.suffix != ".npz":
        raise ReferenceStatsError(
            f"--export-adm {path}: give a .npz file name (the ADM evaluator reads .npz)"
        )
    moments: dict[str, np.ndarray] = {}
    if pool3 is not None and spatial is not None:
        if len(pool3) != count or len(spatial) != count:
            raise ReferenceStatsError(
                f"--export-adm {path}: {count} images but {len(pool3)} pool3 and {len(spatial)} spatial feature rows"
            )
        moments["mu"], moments["sigma"] = feature_statistics(pool3)  # the evaluator's mean and np.cov
        moments["mu_s"], moments["sigma_s"] = feature_statistics(spatial)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        shape = _write_images(zf, image_batches, count, path)
        for name, arr in moments.items():
            _write_member(zf, name, arr)
    record = dict(sidecar) | {
        "format": "glidebench ADM evaluator batch",
        "format_version": 1,
        "count": int(count),
        "image_shape": list(shape),
        "layout": "npz with arr_0 [N, H, W, 3] uint8"
        + (
            ", mu [2048], sigma, mu_s [2023] (mixed_6/conv[..., :7] flattened HWC), sigma_s; float64"
            if moments
            else " (a sample batch: the evaluator computes its statistics)"
        )
        + " (guided-diffusion evaluations/evaluator.py)",
    }
    if moments:
        record |= {"feature_dim": int(moments["mu"].shape[0]), "spatial_dim": int(moments["mu_s"].shape[0])}
    side = sidecar_path(path)
    atomic_write_json(side, record)
    return path, side


def export_features(
    path: str | Path, feats: dict[str, np.ndarray], sidecar: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``pool3`` (and ``logits``, ``spatial`` when in ``feats``) as float32 to ``path`` (.npz), and the
    sidecar. Returns both paths."""

    path = Path(path)
    if path.suffix != ".npz":
        raise ReferenceStatsError(
            f"--export-features {path}: give a .npz file name (the sidecar is its .json)"
        )
    keep = {k: np.asarray(feats[k], dtype=np.float32) for k in ("pool3", "logits", "spatial") if k in feats}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **keep)
    record = dict(sidecar) | {
        "format": "glidebench features",
        "format_version": 1,
        "count": int(len(keep["pool3"])),
        "feature_dim": int(keep["pool3"].shape[1]),
        "layout": "npz with " + ", ".join(f"{k} {list(v.shape)}" for k, v in keep.items()) + ", float32",
    }
    side = sidecar_path(path)
    atomic_write_json(side, record)
    return path, side


def check_export_adm(export_adm: Any, fid_resize: str) -> None:
    """Refuse ``--export-adm`` where the batch would mislead the ADM evaluator (before any work)."""

    if export_adm and fid_resize != "tf-bilinear":
        raise ReferenceStatsError(
            f"--export-adm with --fid-resize {fid_resize}: the ADM evaluator resizes with TF1 bilinear, so its "
            "batches must hold tf-bilinear statistics; leave out --fid-resize (or use --export-stats for clean ones)"
        )


def export_coco_files(
    args: Any,
    feats: dict[str, np.ndarray],
    coco: Any,
    files: list,
    resolution: int,
    extractor: Any,
    fp: str,
    per_resolution: bool,
) -> list[str]:
    """``prepare coco --export-adm`` / ``--export-features`` at ``resolution``; returns the lines to print."""

    sidecar, lines = coco_sidecar(coco, resolution, extractor, fp), []
    if getattr(args, "export_adm", None):
        path = resolution_path(args.export_adm, resolution, per_resolution)
        batches = reference_batches(files, resolution, args.feature_batch_size)
        export_adm(path, batches, len(files), feats["pool3"], feats["spatial"], sidecar)
        lines.append(
            f"  {resolution} px: ADM evaluator batch {path} ({len(files)} images, mu/sigma, mu_s/sigma_s)"
        )
    if getattr(args, "export_features", None):
        path = resolution_path(args.export_features, resolution, per_resolution)
        export_features(path, feats, sidecar)
        lines.append(f"  {resolution} px: reference features {path} ({', '.join(sorted(feats))})")
    return lines


def export_setting(run_dir: str | Path, setting_id: str, adm: str | None, features: str | None) -> list[str]:
    """``glidebench export RUN_DIR --setting ID``: the protocol's images of one generated setting as an ADM
    sample batch (``--adm``: ``arr_0`` only, as the evaluator's sample batches) and its Inception features
    (``--features``: the run's cached ``pool3`` and the rest, first ``num_samples`` rows). Returns the lines to
    print."""

    run_dir = Path(run_dir)
    try:
        spec = RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise ReferenceStatsError(f"{run_dir} is not a finished run directory (spec.json: {e})") from e
    if setting_id not in {s.setting_id for s in spec.settings}:
        raise ReferenceStatsError(
            f"--setting {setting_id}: the run has {[s.setting_id for s in spec.settings]}; give one of them"
        )
    if not adm and not features:
        raise ReferenceStatsError("glidebench export: give --adm FILE.npz and/or --features FILE.npz")
    n, store, lines = spec.num_samples, ImageStore.of(run_dir, setting_id), []
    sidecar = {"run": str(run_dir), "spec_fingerprint": spec.fingerprint, "setting_id": setting_id,
               "resolution": spec.resolution, "fid_resize": spec.fid_resize, "model": spec.model_label}  # fmt: skip
    if adm:
        missing = store.missing(range(n))
        if missing:
            raise ReferenceStatsError(
                f"{len(missing)} of {n} images of {setting_id} are missing (first: {store.path(missing[0])}); "
                "finish the run first (the same command resumes it)"
            )
        export_adm(adm, store.batches(list(range(n)), 64), n, None, None, sidecar)
        lines.append(f"ADM evaluator sample batch {adm} ({n} images of {setting_id}, {spec.resolution} px)")
    if features:
        try:
            prov = json.loads((run_dir / "provenance.json").read_text(encoding="utf-8"))
            name = prov["feature_extractor"]["files"]["settings"][setting_id]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ReferenceStatsError(
                f"{run_dir}: no features of {setting_id} recorded ({e}); finish the run first"
            ) from e
        cached = load_npz_mapped(run_dir / "features" / name)
        fe = prov["feature_extractor"]
        sidecar |= {"inception": fe.get("inception"), "inception_source": fe.get("inception_source"),
                    "inception_fingerprint": fe.get("inception_fingerprint")}  # fmt: skip
        export_features(
            features, {k: np.asarray(v[:n]) for k, v in cached.items() if not k.startswith("__")}, sidecar
        )
        lines.append(f"features {features} ({n} images of {setting_id}: {', '.join(sorted(cached))})")
    return lines
