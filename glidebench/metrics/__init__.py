"""Metrics: pure functions over feature arrays (numpy or torch, float64 math).

FID and KID (`fid`, `kid`), Inception Score (`inception_score`), improved precision/recall (`prc`) and the
CLIP score (`clip_score`). Feature extraction lives in `glidebench.features`; nothing here touches images.
"""

from .clip_score import clip_score
from .fid import (
    FID_MIN_SAMPLES,
    FIDResult,
    as_feature_matrix,
    check_fid_sample_count,
    feature_statistics,
    fid_from_features,
    fid_report,
    frechet_distance,
)
from .inception_score import inception_score
from .kid import kid_from_features, paired_kid_jackknife
from .prc import knn_radii, precision_recall

__all__ = [
    "FID_MIN_SAMPLES",
    "FIDResult",
    "as_feature_matrix",
    "check_fid_sample_count",
    "clip_score",
    "feature_statistics",
    "fid_from_features",
    "fid_report",
    "frechet_distance",
    "inception_score",
    "kid_from_features",
    "paired_kid_jackknife",
    "knn_radii",
    "precision_recall",
]
