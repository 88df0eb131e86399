"""GLIDE's noised CLIP: config, tokenizer, image/text encoders and the CLIP-guidance gradient (cond_fn)."""

from .config import ClipConfig, default_config_path
from .encoders import ImageEncoder, TextEncoder
from .model import ClipModel, create_clip_model, describe_state_dict, load_clip_state_dicts
from .tokenizer import ClipTokenizer

__all__ = [
    "ClipConfig",
    "ClipModel",
    "ClipTokenizer",
    "ImageEncoder",
    "TextEncoder",
    "create_clip_model",
    "default_config_path",
    "describe_state_dict",
    "load_clip_state_dicts",
]
