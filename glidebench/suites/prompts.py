"""``glidebench prompts``: a run's protocol written out for generating its images elsewhere."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .options import RunOptions, resolve_plan
from .rundir import Dist


def write_prompts(o: RunOptions, path: Path) -> Path:
    """``glidebench prompts``: the protocol of the run ``o`` describes, one JSON line per image and setting
    (index, caption, seed, setting, guidance, scale, resolution, file name, protocol and run fingerprints),
    written atomically. Nothing is generated; no run directory is made."""
    import json

    from ..store import atomic_write_text

    plan = resolve_plan(dataclasses.replace(o, out="runs", dry_run=True), Dist())
    spec = plan.spec
    lines = [
        json.dumps(
            {
                "index": p.index,
                "caption": p.caption,
                "seed": p.seed,
                "setting": s.setting_id,
                "guidance": s.guidance,
                "scale": s.scale,
                "resolution": spec.resolution,
                "file": f"{s.setting_id}/{p.index:06d}.png",
                "protocol": spec.protocol_fingerprint,
                "run": spec.fingerprint,
            }  # fmt: skip
        )
        for s in spec.settings
        for p in plan.source.prompts
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
