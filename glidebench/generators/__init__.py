"""Generators: the one way images enter a run (see :mod:`.base`)."""

from .base import (
    GUIDANCE_KINDS,
    Capabilities,
    Generator,
    GeneratorError,
    SamplingOptions,
    as_uint8_images,
    check_supported,
    resize_to,
)
from .plugins import (
    GeneratorNotFound,
    build_generator,
    describe_generators,
    load_generator,
    parse_generator_args,
)

__all__ = [
    "GUIDANCE_KINDS",
    "Capabilities",
    "Generator",
    "GeneratorError",
    "GeneratorNotFound",
    "SamplingOptions",
    "as_uint8_images",
    "build_generator",
    "check_supported",
    "describe_generators",
    "load_generator",
    "parse_generator_args",
    "resize_to",
]
