"""Generators: the one way images enter a run (see :mod:`.base`)."""

from .base import (
    GLIDE_OPTIONS,
    GUIDANCE_KINDS,
    Capabilities,
    Generator,
    GeneratorError,
    SamplingDescription,
    SamplingOptions,
    as_uint8_images,
    check_supported,
    describe_sampling,
    glide_options_note,
    resize_to,
    unread_glide_options,
)
from .plugins import (
    GeneratorNotFound,
    build_generator,
    describe_generators,
    load_generator,
    parse_generator_args,
)

__all__ = [
    "GLIDE_OPTIONS",
    "GUIDANCE_KINDS",
    "Capabilities",
    "Generator",
    "GeneratorError",
    "GeneratorNotFound",
    "SamplingDescription",
    "SamplingOptions",
    "as_uint8_images",
    "build_generator",
    "check_supported",
    "describe_sampling",
    "describe_generators",
    "glide_options_note",
    "load_generator",
    "parse_generator_args",
    "resize_to",
    "unread_glide_options",
]
