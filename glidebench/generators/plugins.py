"""Generators from outside glidebench: ``--generator module.path:factory`` (a user's code), a name registered in
the ``glidebench.generators`` entry-point group (``glidebench ls generators`` lists them), or
``diffusers:PATH_OR_ID`` (any diffusers text-to-image pipeline, :mod:`.diffusers`).

A factory is called with the keyword arguments of ``--generator-args key=value,...`` (values read as JSON when
they parse: numbers, true/false, null, quoted strings; else as plain strings) and must return a
:class:`~glidebench.generators.base.Generator` (or an object with the same attributes). Every failure (module
missing, factory missing or raising, a returned object that is no generator) is a :class:`GeneratorError`
that names the spec and the fix.
"""

from __future__ import annotations

import importlib
import json
from importlib import metadata
from typing import Any

from .base import Capabilities, GeneratorError

GROUP = "glidebench.generators"
DIFFUSERS_PREFIX = "diffusers:"


def parse_generator_args(text: str | None) -> dict[str, Any]:
    """``key=value,key2=value2`` -> kwargs (values JSON where they parse, else strings)."""
    out: dict[str, Any] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise GeneratorError(
                f"--generator-args {text!r}: {part!r} is not key=value (e.g. --generator-args steps=20,name=x)"
            )
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value.strip()
    return out


def entry_points() -> dict[str, metadata.EntryPoint]:
    """The installed ``glidebench.generators`` entry points by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def _factory(spec: str) -> Any:
    installed = entry_points()  # one scan of the installed distributions' metadata
    if spec in installed:
        try:
            return installed[spec].load()
        except Exception as e:  # noqa: BLE001 - a third party's import error
            raise GeneratorError(
                f"--generator {spec}: the entry point {installed[spec].value} ({GROUP}) failed to load: "
                f"{type(e).__name__}: {e}"
            ) from e
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        known = ", ".join(sorted(installed)) or "none installed"
        raise GeneratorError(
            f"--generator {spec!r}: give module.path:factory (a Python module on sys.path and a callable in it), "
            f"diffusers:PATH_OR_ID, or an installed {GROUP} entry point ({known})"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise GeneratorError(
            f"--generator {spec}: module {module_name!r} not found ({e}); run from the directory that holds it or "
            "add it to PYTHONPATH"
        ) from e
    except Exception as e:  # noqa: BLE001 - the user's module raised while importing
        raise GeneratorError(
            f"--generator {spec}: importing {module_name} failed: {type(e).__name__}: {e}"
        ) from e
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise GeneratorError(f"--generator {spec}: {module_name} has no callable {attr!r}")
    return factory


def check_generator(obj: Any, spec: str) -> Any:
    """``obj`` if it has what the runner uses (name, capabilities, identity(), generate()), else an error."""
    missing = [a for a in ("generate", "identity") if not callable(getattr(obj, a, None))]
    if missing or not isinstance(getattr(obj, "capabilities", None), Capabilities):
        raise GeneratorError(
            f"--generator {spec}: the factory returned {type(obj).__name__}, which is not a generator (it needs "
            "generate(), identity() and capabilities: subclass glidebench.generators.Generator)"
        )
    if not isinstance(getattr(obj, "name", None), str) or not obj.name:
        raise GeneratorError(f"--generator {spec}: the generator has no name (a non-empty str attribute)")
    return obj


def load_generator(spec: str, kwargs: dict[str, Any] | None = None) -> Any:
    """The generator named by ``spec`` (see the module docstring), built with ``kwargs``."""
    kwargs = dict(kwargs or {})
    if spec.startswith(DIFFUSERS_PREFIX):
        try:
            import diffusers  # noqa: F401 - checked on every call, not only the adapter's first import
            import transformers  # noqa: F401

            from .diffusers import DiffusersGenerator
        except ImportError as e:
            raise GeneratorError(
                f"--generator {spec} needs diffusers and transformers ({e}); install the extra: "
                'pip install -e ".[diffusers]"'
            ) from e
        factory: Any = DiffusersGenerator
        kwargs = {"path": spec[len(DIFFUSERS_PREFIX) :]} | kwargs
    else:
        factory = _factory(spec)
    try:
        obj = factory(**kwargs)
    except GeneratorError:
        raise
    except Exception as e:  # noqa: BLE001 - the factory is the user's code
        raise GeneratorError(
            f"--generator {spec}: the factory raised {type(e).__name__}: {e} (arguments {kwargs})"
        ) from e
    return check_generator(obj, spec)


def describe_generators() -> list[dict[str, str]]:
    """Rows for ``glidebench ls generators``: the built-in kinds and the installed entry points."""
    rows = [
        {"name": "embedded", "kind": "built-in", "how": "--model embedded (the default without MS-COCO)"},
        {"name": "official", "kind": "built-in", "how": "--model official (GLIDE filtered checkpoints)"},
        {"name": "diffusers:PATH_OR_ID", "kind": "adapter", "how": 'pip install -e ".[diffusers]"'},
        {"name": "module.path:factory", "kind": "plug-in", "how": "--generator module.path:factory"},
    ]
    for name, ep in sorted(entry_points().items()):
        rows.append(
            {"name": name, "kind": f"entry point ({ep.dist.name if ep.dist else '?'})", "how": ep.value}
        )
    return rows
