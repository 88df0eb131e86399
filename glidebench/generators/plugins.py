"""Generators from outside glidebench: ``--generator module.path:factory`` (a user's code), a name registered in
the ``glidebench.generators`` entry-point group (``glidebench ls generators`` lists them), or
``diffusers:PATH_OR_ID`` (any diffusers text-to-image pipeline, :mod:`.diffusers`).

A factory is called with the keyword arguments of ``--generator-args key=value,...`` (values read as JSON when
they parse: numbers, true/false, null, quoted strings; else as plain strings) and must return a
:class:`~glidebench.generators.base.Generator` (or an object with the same attributes). The run records the
arguments with the factory's defaults filled in (:func:`canonical_args`), so a default given or left out is the
same run. ``module.path`` is looked up with the current directory first on ``sys.path``, as under
``python -m glidebench`` (the console script does not put it there by itself). Every failure (module missing,
factory missing or raising, a returned object that is no generator) is a :class:`GeneratorError` that names
the spec and the fix; a module found nowhere is :class:`GeneratorNotFound` (exit status 2), whose one line
says where it looked.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys
from importlib import metadata
from pathlib import Path
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
    _add_cwd_to_path()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and not (module_name == e.name or module_name.startswith(e.name + ".")):
            raise GeneratorError(  # the module was found; an import inside it failed
                f"--generator {spec}: importing {module_name} failed: {type(e).__name__}: {e}"
            ) from e
        raise GeneratorNotFound(_not_found(spec, module_name)) from e
    except Exception as e:  # noqa: BLE001 - the user's module raised while importing
        raise GeneratorError(
            f"--generator {spec}: importing {module_name} failed: {type(e).__name__}: {e}"
        ) from e
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise GeneratorError(f"--generator {spec}: {module_name} has no callable {attr!r}")
    return factory


class GeneratorNotFound(GeneratorError):
    """``--generator module:factory`` names a module that is nowhere on the import path (a usage error)."""

    exit_code = 2


def _add_cwd_to_path() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m glidebench`` does (the console script
    starts with its own bin/ folder there instead), so that ``--generator my_model:make`` finds my_model.py."""
    cwd = os.getcwd()
    if not any(p in ("", ".", cwd) or os.path.abspath(p or ".") == cwd for p in sys.path):
        sys.path.insert(0, cwd)
        importlib.invalidate_caches()


def _not_found(spec: str, module_name: str) -> str:
    """One line: which file was looked for, in the current directory and on the rest of the import path."""
    cwd = os.getcwd()
    where = Path(*module_name.split("."))
    others = [p for p in sys.path if p and os.path.isdir(p) and os.path.abspath(p) != cwd]
    return (
        f"--generator {spec}: no module {module_name!r}: looked for {where}.py (or {where}/) in the current "
        f"directory {cwd} and on the import path ({os.pathsep.join(others)}); run from the folder that holds "
        f"{where}.py, add that folder to PYTHONPATH, or give an installed {GROUP} entry point"
    )


def canonical_args(factory: Any, kwargs: dict[str, Any], spec: str) -> dict[str, Any]:
    """``kwargs`` with the factory's defaults filled in (``inspect.signature`` bind + apply_defaults), so that
    giving a default and leaving it out name the same generator (one run directory). A factory that takes
    only ``**kwargs`` declares no defaults: its arguments stay as given. Arguments the signature cannot take are
    an error that shows it."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or an odd callable: nothing to fill in
        return dict(kwargs)
    try:
        bound = sig.bind(**kwargs)
    except TypeError as e:
        raise GeneratorError(f"--generator {spec}: --generator-args {kwargs} do not fit {sig}: {e}") from None
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            out[name] = value
    return out


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


def declares_deterministic(generator: Any) -> bool:
    """False when a generator says its images do not follow from (prompt, seed, setting) alone: its
    ``Capabilities(deterministic=False)``, or an attribute ``deterministic = False`` on the generator."""
    capabilities = getattr(generator, "capabilities", None)
    return bool(getattr(capabilities, "deterministic", True)) and bool(
        getattr(generator, "deterministic", True)
    )


def load_generator(spec: str, kwargs: dict[str, Any] | None = None) -> Any:
    """The generator named by ``spec`` (see the module docstring), built with ``kwargs``."""
    return build_generator(spec, kwargs)[0]


def build_generator(spec: str, kwargs: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """The generator named by ``spec`` and its arguments in canonical form (:func:`canonical_args` for a
    plug-in's factory; a diffusers pipeline's as given): what the run's identity records."""
    kwargs = dict(kwargs or {})
    given = kwargs
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
        kwargs = given = canonical_args(factory, kwargs, spec)
    try:
        obj = factory(**kwargs)
    except GeneratorError:
        raise
    except Exception as e:  # noqa: BLE001 - the factory is the user's code
        raise GeneratorError(
            f"--generator {spec}: the factory raised {type(e).__name__}: {e} (arguments {kwargs})"
        ) from e
    return check_generator(obj, spec), given


def _diffusers_status() -> str:
    """Whether the diffusers adapter can run here (its packages are found without importing them)."""

    missing = [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return f'needs {" and ".join(missing)}: pip install -e ".[diffusers]"'
    versions = ", ".join(f"{m} {metadata.version(m)}" for m in ("diffusers", "transformers"))
    return f"installed ({versions}): --generator diffusers:PATH_OR_ID"


def describe_generators() -> list[dict[str, str]]:
    """Rows for ``glidebench ls generators``: the built-in kinds and the installed entry points."""
    rows = [
        {"name": "embedded", "kind": "built-in", "how": "--model embedded (the default without MS-COCO)"},
        {"name": "official", "kind": "built-in", "how": "--model official (GLIDE filtered checkpoints)"},
        {"name": "diffusers:PATH_OR_ID", "kind": "adapter", "how": _diffusers_status()},
        {"name": "module.path:factory", "kind": "plug-in", "how": "--generator module.path:factory"},
    ]
    for name, ep in sorted(entry_points().items()):
        rows.append(
            {"name": name, "kind": f"entry point ({ep.dist.name if ep.dist else '?'})", "how": ep.value}
        )
    return rows
