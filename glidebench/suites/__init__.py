"""Suite registry: suites are data (``glidebench/suites/<name>.json``, each with a version), not code edits.

A suite file names its runner module, and holds ``profiles`` (defaults per data kind: ``embedded`` and
``coco``) and named ``presets`` (e.g. ``paper``) that override a profile. Keys are validated: an unknown key
is an error that names it, so a typo never silently falls back to a default.

Resolution of an option, lowest to highest priority: profile of the data kind < preset < command-line flag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..keys import check_keys

OPTION_KEYS = frozenset(
    "split captions num_samples reference_size seed cfg clip sampler steps resolution up_sampler up_steps "
    "upsample_temp batch_size dtype inception kid_subset_size prc_k sweep reference cfg_interval caption_style "
    "samples_per_prompt diversity_prompts bootstrap_resamples intervals".split()
)
SUITE_KEYS = frozenset({"suite", "version", "runner", "description", "profiles", "presets"})


class SuiteError(ValueError):
    """A suite file that does not follow the schema (the message names the key and the file)."""


@dataclass(frozen=True)
class SuiteDef:
    name: str
    version: int
    runner: str
    description: str
    profiles: dict[str, dict[str, Any]]
    presets: dict[str, dict[str, Any]]
    path: Path

    def options(self, data: str, preset: str | None = None) -> dict[str, Any]:
        """The profile of ``data`` overridden by ``preset`` (without its description)."""
        if data not in self.profiles:
            raise SuiteError(
                f"suite {self.name} has no profile for data {data!r}; it has {sorted(self.profiles)}"
            )
        opts = dict(self.profiles[data])
        if preset is not None:
            if preset not in self.presets:
                raise SuiteError(
                    f"suite {self.name} has no preset {preset!r}; presets: {sorted(self.presets)}"
                )
            opts |= {k: v for k, v in self.presets[preset].items() if k != "description"}
        return opts


def suites_dir() -> Path:
    return Path(str(resources.files("glidebench"))) / "suites"


def _validate(data: Any, path: Path) -> SuiteDef:
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite file holds a JSON object")
    try:
        check_keys(str(path), data, SUITE_KEYS, {"suite", "version", "runner", "profiles"})
    except ValueError as e:
        raise SuiteError(str(e)) from None
    if not isinstance(data["version"], int) or data["version"] < 1:
        raise SuiteError(f"{path}: version must be a positive integer")
    for group in ("profiles", "presets"):
        for name, opts in (data.get(group) or {}).items():
            if not isinstance(opts, dict):
                raise SuiteError(f"{path}: {group}.{name} must be an object")
            bad = set(opts) - OPTION_KEYS - ({"description"} if group == "presets" else set())
            if bad:
                raise SuiteError(
                    f"{path}: {group}.{name} has unknown option(s) {sorted(bad)}; valid: {sorted(OPTION_KEYS)}"
                )
    return SuiteDef(
        name=str(data["suite"]),
        version=int(data["version"]),
        runner=str(data["runner"]),
        description=str(data.get("description", "")),
        profiles=dict(data["profiles"]),
        presets=dict(data.get("presets") or {}),
        path=path,
    )


def list_suites() -> list[SuiteDef]:
    return [load_suite(p.stem) for p in sorted(suites_dir().glob("*.json"))]


def load_suite(name: str) -> SuiteDef:
    path = suites_dir() / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in suites_dir().glob("*.json"))
        raise SuiteError(f"unknown suite {name!r}; known suites: {known} (see `glidebench ls suites`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SuiteError(f"{path} is not valid JSON: {e}") from e
    suite = _validate(data, path)
    if suite.name != name:
        raise SuiteError(f"{path} declares suite {suite.name!r}; the file name must match")
    return suite
