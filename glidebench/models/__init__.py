"""The models of a run: which weights it uses, their identities, the random-initialised fallback, and loading.

Two families:

- ``official``: the released GLIDE (filtered) checkpoints from glide's download cache (``glide.checkpoints``):
  ``base`` (64 px), ``upsample`` (64->256), the noised CLIP (``clip/image-enc`` + ``clip/text-enc``) for CLIP
  guidance; the CLIP score uses OpenAI CLIP ViT-B/16 through open_clip (downloaded on first use).
- ``embedded``: the small models trained on the embedded caption-image set, shipped as files in
  ``glidebench/assets/models/`` (or the directory named by ``GLIDEBENCH_MODELS``). Each role has a file stem:

      base         embedded-base.safetensors          (glide.checkpoints.save_model format)
      upsample     embedded-upsample.safetensors      (same)
      noised-clip  embedded-clip-noised.safetensors   (glide.train.export.save_clip format)
      eval-clip    embedded-clip-eval.safetensors     (same, trained on clean images: the CLIP-score model)

  and an optional JSON card beside it (``<stem>.json``). A card may name another file (``"file"``), and its
  ``"sha256"`` is checked against the file before loading (a mismatch is a corrupt-checkpoint error); any
  other keys are recorded in the provenance as they are. :func:`write_card` writes a card.

Fallback: while no trained embedded base exists, the embedded family is a RANDOM-INITIALISED model of the
same architecture as ``recipes/embedded-base.json`` (seeded, built in memory; every zero-initialised output
layer is filled with small seeded noise so that the text and the guidance scale change the samples). Then
every missing role is random too, except the evaluator CLIP (a random evaluator would give a meaningless CLIP
score: the score is skipped with a warning instead). The results' model column then reads
``embedded-random-init``. As soon as the trained files appear, they are used (and, since their SHA-256 is part
of the run's fingerprint, the run goes to a new directory).

Modules: :mod:`.registry` (the embedded files and cards, the listing), :mod:`.random_init` (the fallback),
:mod:`.sources` (typed per-role sources that load themselves), :mod:`.plan` (:class:`ModelPlan`,
:func:`plan_models`), :mod:`.load` (:func:`load_models`, :func:`load_eval_clip`). This package re-exports
their public names; code that monkeypatches one must patch it in the module that uses it.
"""

from __future__ import annotations

from glide.checkpoints import OFFICIAL, CheckpointError, cached_path, how_to_get, is_cached, sha256_file

from ..features import GlideClipEmbedder
from .load import LoadedModels, load_eval_clip, load_models
from .plan import ModelPlan, official_available, plan_for_generator, plan_models, upsampler_resolution
from .random_init import (
    RANDOM_SEED,
    random_base_config,
    random_clip,
    random_clip_config,
    random_identity,
    random_unet,
    random_upsample_config,
)
from .registry import (
    CARD_FORMAT,
    CLIP_ROLES,
    EMBEDDED_SHORT_STEMS,
    EMBEDDED_STEMS,
    OFFICIAL_EVAL_CLIP,
    OFFICIAL_NAMES,
    ROLES,
    EmbeddedFile,
    ModelUnavailable,
    config_of_file,
    describe_models,
    embedded_files,
    models_dir,
    short_fallbacks,
    write_card,
)
from .sources import (
    OPENAI_CLIP_B16,
    EvalClipSource,
    FileSource,
    ModelSource,
    OfficialSource,
    OpenClipSource,
    RandomSource,
)

__all__ = [
    "CARD_FORMAT",
    "CLIP_ROLES",
    "EMBEDDED_SHORT_STEMS",
    "EMBEDDED_STEMS",
    "OFFICIAL",
    "OFFICIAL_EVAL_CLIP",
    "OFFICIAL_NAMES",
    "OPENAI_CLIP_B16",
    "RANDOM_SEED",
    "ROLES",
    "CheckpointError",
    "EmbeddedFile",
    "EvalClipSource",
    "FileSource",
    "GlideClipEmbedder",
    "LoadedModels",
    "ModelPlan",
    "ModelSource",
    "ModelUnavailable",
    "OfficialSource",
    "OpenClipSource",
    "RandomSource",
    "cached_path",
    "config_of_file",
    "describe_models",
    "embedded_files",
    "how_to_get",
    "is_cached",
    "load_eval_clip",
    "load_models",
    "models_dir",
    "official_available",
    "plan_for_generator",
    "plan_models",
    "random_base_config",
    "random_clip",
    "random_clip_config",
    "random_identity",
    "random_unet",
    "random_upsample_config",
    "sha256_file",
    "short_fallbacks",
    "upsampler_resolution",
    "write_card",
]
