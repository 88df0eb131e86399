"""The prompts file: a run's protocol written out for generating its images elsewhere, and read back as the
contract that scoring them keeps.

``glidebench prompts SUITE [run options] --out prompts.jsonl`` writes one JSON line per image and setting:
``index``, ``caption``, ``seed``, ``setting``, ``guidance``, ``scale``, ``resolution``, ``file``, the protocol's
size (``num_samples``, ``samples_per_prompt``, ``diversity_prompts``, ``reference_size``) and the ``protocol``
fingerprint (equal for every model under the same protocol). It carries no run fingerprint: a folder run's identity includes its
images' content, which does not exist yet.

Which settings a command line means is one rule for ``prompts`` and for ``run --images``: the suite profile's
CLIP-guidance scales are GLIDE's (its noised CLIP), so images made elsewhere get CLIP-guidance settings only
when ``--clip`` names them; ``prompts --generator X`` follows X's capabilities as ``run --generator X`` does.

``run SUITE --prompts prompts.jsonl --images DIR`` (or with a generator) scores exactly the file's protocol:
the file decides the resolution, the settings, the base seed, the number of images per setting and the
reference set's size (a flag that says otherwise is refused, naming both values; size flags given are kept); once planned, the run's indices, seeds and captions and
its protocol fingerprint must equal the file's, or the run is refused before any work, in one line that
names the first difference.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..spec import Setting, parse_scales
from ..store import atomic_write_text
from .options import RunOptions
from .plan import resolve_plan
from .rundir import Dist

_KEYS = ("index", "caption", "seed", "setting", "guidance", "scale", "resolution", "protocol")
_SIZE = ("num_samples", "samples_per_prompt", "diversity_prompts", "reference_size")


def elsewhere_options(o: RunOptions) -> RunOptions:
    """``o`` with the settings rule of images made elsewhere: the profile's CLIP-guidance scales dropped unless
    ``--clip`` names them (a ``--generator`` or ``--model`` keeps its own rule)."""
    if o.clip is None and not (o.generator or o.model):
        return dataclasses.replace(o, clip="")
    return o


def write_prompts(o: RunOptions, path: Path) -> Path:
    """``glidebench prompts``: the protocol of the run ``o`` describes (see the module docstring), written
    atomically. Nothing is generated; no run directory is made."""

    plan = resolve_plan(dataclasses.replace(elsewhere_options(o), out="runs", dry_run=True), Dist())
    spec = plan.spec
    size = {
        "num_samples": spec.num_samples,
        "samples_per_prompt": spec.samples_per_prompt,
        "diversity_prompts": spec.diversity_prompts,
        "reference_size": int(plan.opts["reference_size"]),  # the option (0 = the whole split)
    }
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
                **size,
                "protocol": spec.protocol_fingerprint,
            }  # fmt: skip
        )
        for s in spec.settings
        for p in plan.source.prompts
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class PromptsContract:
    """What a prompts file fixes (see the module docstring)."""

    path: Path
    resolution: int
    settings: tuple[Setting, ...]
    base_seed: int
    total: int  # images per setting: indices 0..total-1
    captions: tuple[str, ...]  # by index
    protocol: str
    size: dict[
        str, int
    ]  # num_samples, samples_per_prompt, diversity_prompts, reference_size (not in older files)

    def where(self) -> str:
        return f"--prompts {self.path}"


def read_prompts_file(path: Path) -> PromptsContract:
    """Read and check a prompts file (one resolution, one protocol, the same indices 0..T-1 in every setting,
    seed - index constant, one caption per index); errors name the file, the line and the fix."""
    where = f"--prompts {path}"
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ValueError(
            f"{where}: cannot read it ({e.strerror or e}); give the file `glidebench prompts` wrote"
        ) from None
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{where}: line {n} is not JSON ({e.msg}); give the file `glidebench prompts` wrote"
            ) from None
        missing = [k for k in _KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(
                f"{where}: line {n} lacks {', '.join(missing)}; write it with `glidebench prompts`"
            )
        rows.append(row)
    if not rows:
        raise ValueError(f"{where}: no lines; write it with `glidebench prompts SUITE [options] --out FILE`")
    for key in ("resolution", "protocol"):
        values = sorted({str(r[key]) for r in rows})
        if len(values) > 1:
            raise ValueError(
                f"{where}: lines of {len(values)} {key}s ({', '.join(values[:3])}); one protocol per file"
            )
    settings: dict[str, Setting] = {}
    indices: dict[str, list[int]] = {}
    captions: dict[int, str] = {}
    offsets = set()
    for r in rows:
        s = Setting(str(r["guidance"]), float(r["scale"]))
        if s.setting_id != r["setting"]:
            raise ValueError(
                f"{where}: setting {r['setting']!r} is not guidance {r['guidance']} at {r['scale']}"
            )
        settings.setdefault(s.setting_id, s)
        indices.setdefault(s.setting_id, []).append(int(r["index"]))
        offsets.add(int(r["seed"]) - int(r["index"]))
        if captions.setdefault(int(r["index"]), str(r["caption"])) != str(r["caption"]):
            raise ValueError(f"{where}: index {r['index']} has two captions; one protocol per file")
    if len(offsets) != 1:
        raise ValueError(f"{where}: seeds are not base seed + index (offsets {sorted(offsets)[:3]})")
    total = len(captions)
    for sid, idx in indices.items():
        if sorted(idx) != list(range(total)):
            raise ValueError(
                f"{where}: setting {sid} lists {len(idx)} lines, not each index 0..{total - 1} once; write the file "
                "again with `glidebench prompts`"
            )
    size = {k: int(rows[0][k]) for k in _SIZE if k in rows[0]}
    return PromptsContract(
        Path(path), int(rows[0]["resolution"]), tuple(settings.values()), offsets.pop(), total,
        tuple(captions[i] for i in range(total)), str(rows[0]["protocol"]), size,
    )  # fmt: skip


def _scales(settings: tuple[Setting, ...], kind: str) -> list[float]:
    return sorted(s.scale for s in settings if s.guidance == kind)


def apply_contract(o: RunOptions, c: PromptsContract) -> RunOptions:
    """``o`` with the file's resolution, settings, base seed and size; a flag that says otherwise is refused."""

    cfg, clip = _scales(c.settings, "cfg"), _scales(c.settings, "clip")
    unguided = any(s.guidance == "none" for s in c.settings)
    given = {
        "--resolution": (o.resolution, str(c.resolution), lambda v: str(v)),
        "--cfg": (o.cfg, cfg, lambda v: sorted(parse_scales(v, "--cfg"))),
        "--clip": (o.clip, clip, lambda v: sorted(parse_scales(v, "--clip"))),
        "--seed": (o.seed, c.base_seed, int),
    }
    for flag, (value, want, read) in given.items():
        if value is not None and read(value) != want:
            raise ValueError(
                f"{c.where()}: the file says {flag} {_words(want)}, the command line {value}; leave {flag} out "
                "(the prompts file decides it) or write the prompts again with it"
            )
    if o.unguided and not unguided:
        raise ValueError(f"{c.where()}: --unguided, but the file has no unguided setting; leave it out")
    changes: dict[str, Any] = {
        "resolution": str(c.resolution), "cfg": _words(cfg), "clip": _words(clip), "unguided": unguided,
        "seed": c.base_seed,
    }  # fmt: skip
    counts = {k: v for k, v in c.size.items() if k != "reference_size"}
    if counts and all(getattr(o, k) is None for k in ("limit", *counts)):
        changes |= counts
    own_references = (
        o.captions_file is not None or o.reference_stats is not None
    )  # they decide the references
    if "reference_size" in c.size and o.reference_size is None and not own_references:
        changes["reference_size"] = c.size["reference_size"]
    return dataclasses.replace(o, **changes)


def _words(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:g}" for v in value)
    return str(value)


def check_contract(plan: Any, c: PromptsContract) -> None:
    """Refuse, before any work, a planned run that is not the file's protocol (the first difference named)."""
    spec = plan.spec
    mine, theirs = [s.setting_id for s in spec.settings], [s.setting_id for s in c.settings]
    if sorted(mine) != sorted(theirs):
        raise ValueError(
            f"{c.where()}: the file's settings are {', '.join(theirs)}, this run's {', '.join(mine)} (an image "
            "folder's sub-folders name its settings); give exactly the file's settings"
        )
    if spec.resolution != c.resolution:
        raise ValueError(
            f"{c.where()}: the file's resolution is {c.resolution} px, this run's {spec.resolution} px; leave "
            "--resolution out"
        )
    if spec.total_samples != c.total:
        raise ValueError(
            f"{c.where()}: the file lists {c.total} images per setting (indices 0..{c.total - 1}), these options "
            f"make {spec.total_samples}; give the --limit / --num-samples / --samples-per-prompt that `glidebench "
            "prompts` was given"
        )
    for p in plan.source.prompts:
        if p.caption != c.captions[p.index] or p.seed != c.base_seed + p.index:
            raise ValueError(
                f"{c.where()}: index {p.index} is {c.captions[p.index]!r} (seed {c.base_seed + p.index}) in the "
                f"file but {p.caption!r} (seed {p.seed}) here: another data source, split, caption style or caption "
                "selection; give the options `glidebench prompts` was given"
            )
    if spec.protocol_fingerprint != c.protocol:
        raise ValueError(
            f"{c.where()}: the run's protocol ({spec.protocol_fingerprint[:12]}) is not the file's ({c.protocol[:12]}),"
            " though captions, seeds, settings and resolution agree: an option the lines do not list differs "
            "(reference set, metric or interval options); give the options `glidebench prompts` was given"
        )
