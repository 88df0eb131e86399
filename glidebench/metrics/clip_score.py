"""CLIP score over image and caption embeddings.

Owns: the GLIDE paper's CLIP score (Nichol et al. 2021, section 5.2, following Park et al.): the mean over
samples of logit_scale * cos(E_I(x), E_T(c)), logit_scale = 100, NO clamp; and, for comparison, the
torchmetrics-style score with max(cos, 0), and CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free
Evaluation Metric for Image Captioning", eq. 1 with w = 2.5): the mean over samples of 2.5 * max(cos, 0).
Embeddings are L2-normalised here, so raw encoder outputs are fine. The paper evaluates with OpenAI CLIP
ViT-B/16 (not the noised guidance CLIP): `glidebench.features.ClipEmbedder`; later papers use other backbones
(``--clip-score-model``), so a CLIP score is only comparable under the same backbone and convention.
"""

from __future__ import annotations

import numpy as np

from .fid import ArrayLike, as_feature_matrix

CLIPSCORE_W = 2.5  # Hessel et al. 2021's rescaling weight w


def clip_score(image_emb: ArrayLike, text_emb: ArrayLike, logit_scale: float = 100.0) -> dict[str, float]:
    """CLIP score of paired embeddings [N, D]: keys `clip_score` (logit_scale * mean cos, no clamp),
    `clip_score_clamped` (logit_scale * mean max(cos, 0)), `clip_score_2p5` (CLIPScore: 2.5 * mean max(cos, 0))
    and `cosine_mean`."""
    img = as_feature_matrix(image_emb, "image_emb")
    txt = as_feature_matrix(text_emb, "text_emb")
    if img.shape != txt.shape:
        raise ValueError(
            f"image_emb {img.shape} and text_emb {txt.shape} must be paired row by row with the same width"
        )
    img_norm = np.linalg.norm(img, axis=1, keepdims=True)
    txt_norm = np.linalg.norm(txt, axis=1, keepdims=True)
    if (img_norm == 0).any() or (txt_norm == 0).any():
        raise ValueError("an embedding is all zeros, so its cosine is undefined; check the encoder's output")
    cos = ((img / img_norm) * (txt / txt_norm)).sum(axis=1)
    return {
        "clip_score": float(logit_scale * cos.mean()),
        "clip_score_clamped": float(logit_scale * np.maximum(cos, 0.0).mean()),
        "clip_score_2p5": float(CLIPSCORE_W * np.maximum(cos, 0.0).mean()),
        "cosine_mean": float(cos.mean()),
    }
