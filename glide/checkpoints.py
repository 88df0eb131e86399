"""Checkpoints: the official registry, a verified download cache, and safe loading and saving.

- Official checkpoints (glide-text2im, December 2021) are downloaded into ``GLIDE_CACHE`` (default: the
  user cache dir, e.g. ~/.cache/glide) with a progress bar, resume of a partial ``.part`` file and an atomic
  rename. The SHA-256 of a cached file is recorded (``NAME.sha256`` beside it) only once the file is known to
  be good: after a complete download (checked against the registry's SHA-256 where the registry has one) or
  after the file first loaded into its model. Every later load checks the file against the record (or the
  registry's SHA-256); a mismatch is an error that says how to recover. A file that fails to load is never
  recorded, so replacing it with the right file just works.
- A local file with a JSON card beside it (``<stem>.json`` with ``"file"`` and ``"sha256"``, as the embedded
  models in glidebench/assets/models/ have) is checked against the card's SHA-256 before it loads.
- Loading uses ``torch.load(weights_only=True)`` (.pt) or safetensors (:mod:`glide.statedict`); a file that
  is missing, truncated, not a checkpoint, holds pickled Python objects, or is made for another model variant
  gives an error naming the file and the problem.
- Checkpoints trained by this project are safetensors files whose metadata carries the resolved config.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import ModelConfig, preset
from .fileio import atomic_write, commit_file, save_safetensors, sha256_file
from .statedict import CheckpointError, load_state_dict

__all__ = [
    "OFFICIAL",
    "CheckpointError",
    "OfficialCheckpoint",
    "cache_dir",
    "cached_path",
    "check_official_state_dict",
    "config_from_metadata",
    "describe_state_dict",
    "download",
    "how_to_get",
    "is_cached",
    "load_clip",
    "load_into",
    "load_model",
    "load_state_dict",
    "record_sha256",
    "save_model",
    "sha256_file",
    "verify",
    "verify_card",
]

_BLOB = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021"


@dataclass(frozen=True)
class OfficialCheckpoint:
    name: str
    url: str
    kind: str  # "unet" or "clip-image" / "clip-text"
    options: dict[str, Any]
    # The file's SHA-256 where it is known in advance (hex): a download is checked against it, and so is a
    # cached file that has no record yet. None: the first complete download (or first load) is recorded.
    sha256: str | None = None


OFFICIAL: dict[str, OfficialCheckpoint] = {
    "base": OfficialCheckpoint("base", f"{_BLOB}/base.pt", "unet", {"preset": "base"}),
    "upsample": OfficialCheckpoint("upsample", f"{_BLOB}/upsample.pt", "unet", {"preset": "upsample"}),
    "base-inpaint": OfficialCheckpoint(
        "base-inpaint", f"{_BLOB}/base_inpaint.pt", "unet", {"preset": "base-inpaint"}
    ),
    "upsample-inpaint": OfficialCheckpoint(
        "upsample-inpaint", f"{_BLOB}/upsample_inpaint.pt", "unet", {"preset": "upsample-inpaint"}
    ),
    "clip/image-enc": OfficialCheckpoint("clip/image-enc", f"{_BLOB}/clip_image_enc.pt", "clip-image", {}),
    "clip/text-enc": OfficialCheckpoint("clip/text-enc", f"{_BLOB}/clip_text_enc.pt", "clip-text", {}),
}


def cache_dir() -> Path:
    env = os.environ.get("GLIDE_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("glide"))


def cached_path(name: str) -> Path:
    if name not in OFFICIAL:
        raise CheckpointError(f"unknown official checkpoint {name!r}; known: {sorted(OFFICIAL)}")
    return cache_dir() / (name.replace("/", "_") + ".pt")


def is_cached(name: str) -> bool:
    return cached_path(name).exists()


def how_to_get(name: str) -> str:
    ck = OFFICIAL[name]
    return (
        f"the official GLIDE checkpoint {name!r} is not in the cache ({cached_path(name)}). Download it with "
        f"`python -m glide download {name}` on a machine with internet (source: {ck.url}), or copy the file "
        f"there (or set GLIDE_CACHE to a directory holding {cached_path(name).name})"
    )


def download(name: str, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download an official checkpoint into the cache (resumes a partial download) and record its SHA-256.

    The download is verified before it is recorded: its size must be the announced one and, where the
    registry knows the file's SHA-256, its hash must be that one (a mismatch deletes it).
    """
    dest = cached_path(name)
    if dest.exists():
        verify(dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(".pt.part")
    start = part.stat().st_size if part.exists() else 0
    ck = OFFICIAL[name]
    request = urllib.request.Request(ck.url, headers={"Range": f"bytes={start}-"} if start else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if start and response.status != 206:  # server ignored the range: start over
            start = 0
        length = response.headers.get("Content-Length")
        total = int(length) + start if length is not None else 0
        with (
            open(part, "ab" if start else "wb") as f,
            tqdm(
                total=total or None, initial=start, unit="B", unit_scale=True, desc=name, disable=not progress
            ) as bar,
        ):
            while block := response.read(1 << 20):
                f.write(block)
                bar.update(len(block))
    if total and part.stat().st_size != total:
        raise CheckpointError(
            f"download of {name} stopped at {part.stat().st_size} of {total} bytes; run it again to resume"
        )
    digest = sha256_file(part)
    if ck.sha256 and digest != ck.sha256.lower():
        part.unlink()
        raise CheckpointError(
            f"the download of {name} from {ck.url} has SHA-256 {digest}, not the official {ck.sha256}: it is "
            "corrupt (or the file at the source changed). It was deleted; run the download again"
        )
    commit_file(part, dest)
    if ck.sha256 or total:  # verified: the known hash, or every announced byte arrived
        record_sha256(dest, digest)
    return dest


def _official_name(path: Path) -> str | None:
    """The registry name whose cache file ``path`` is (None for any other file)."""
    target = os.path.abspath(path)
    for name in OFFICIAL:
        if os.path.abspath(cached_path(name)) == target:
            return name
    return None


def verify(path: Path) -> str:
    """Check a cached file against its recorded SHA-256 (``NAME.sha256``) or, with no record, against the
    registry's known SHA-256; returns the file's SHA-256. Records nothing: see :func:`record_sha256`."""
    path = Path(path)
    digest = sha256_file(path)
    record = path.with_suffix(".sha256")
    if record.exists():
        expected = record.read_text().split()[0]
        if digest != expected:
            raise CheckpointError(
                f"{path} has SHA-256 {digest}, but {expected} was recorded when it was downloaded or first "
                f"loaded: the file changed or is corrupt. Delete {path} and {record} and download it again"
            )
        return digest
    name = _official_name(path)
    known = OFFICIAL[name].sha256 if name else None
    if known and digest != known.lower():
        raise CheckpointError(
            f"{path} has SHA-256 {digest}, but the official {name!r} file has {known}: it is truncated, corrupt "
            f"or another file. Delete it and download it again (`python -m glide download {name}`)"
        )
    return digest


def verify_card(path: str | os.PathLike) -> str | None:
    """Check a local checkpoint against the SHA-256 in the JSON card beside it (``<stem>.json`` naming the file,
    as glidebench's model cards do); returns the digest, or None when there is no such card. Corrupted tensor
    data often still loads and samples (only bytes that become NaN show), so the card is what catches it."""
    path = Path(path)
    card_path = path.with_suffix(".json")
    if path.suffix == ".json" or not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not a card (a card that is unreadable JSON is glidebench's error to give)
    if not isinstance(card, dict) or not card.get("sha256") or card.get("file", path.name) != path.name:
        return None
    digest = sha256_file(path)
    if digest != str(card["sha256"]).lower():
        raise CheckpointError(
            f"{path} has SHA-256 {digest}, but its card {card_path} says {card['sha256']}: the file is corrupt or "
            f"was replaced. Copy {path.name} again from its source (or re-export it and rewrite its card)"
        )
    return digest


def record_sha256(path: Path, digest: str) -> None:
    """Record a cached file's SHA-256 as known-good (``NAME.sha256``); later loads are checked against it.
    Call it only for a verified download or a file that has loaded successfully."""
    atomic_write(Path(path).with_suffix(".sha256"), digest + "\n")


def _record_if_new(path: Path, digest: str) -> None:
    if not path.with_suffix(".sha256").exists():
        record_sha256(path, digest)


def describe_state_dict(sd: dict[str, torch.Tensor]) -> str:
    """What kind of model a state dict belongs to, judged by its keys (for error messages)."""
    if "w_voc" in sd or any(k.endswith("w_voc") for k in sd):
        return "a noised-CLIP text encoder"
    if "w_t" in sd or any(k.endswith("w_t") for k in sd):
        return "a noised-CLIP image encoder"
    w = sd.get("input_blocks.0.0.weight")
    if w is not None:
        names = {3: "base", 6: "upsample", 7: "base-inpaint", 10: "upsample-inpaint"}
        return f"a GLIDE {names.get(w.shape[1], f'{w.shape[1]}-channel')} UNet"
    return "not a GLIDE model"


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with an error that says which model the checkpoint was made for."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        got = describe_state_dict(sd)
        want = describe_state_dict({k: v for k, v in expected.items()})
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            k = shapes[0]
            detail.append(
                f"{len(shapes)} with other shapes (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(expected[k].shape)})"
            )
        raise CheckpointError(
            f"{source} holds {got}, but the model being loaded is {want}: {'; '.join(detail)}. "
            "Use the checkpoint made for this model (or the matching model config)"
        )
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(sd[k].to(v.dtype))


def check_official_state_dict(name: str, sd: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Error unless ``sd`` is the kind of model the official checkpoint ``name`` holds (by its keys)."""
    ck = OFFICIAL[name]
    want = {
        "unet": f"a GLIDE {ck.options.get('preset')} UNet",
        "clip-image": "a noised-CLIP image encoder",
        "clip-text": "a noised-CLIP text encoder",
    }[ck.kind]
    got = describe_state_dict(sd)
    if got != want:
        raise CheckpointError(
            f"{path} holds {got}, but the official {name!r} checkpoint is {want}: another file was put in its "
            f"place. Delete it and download it again (`python -m glide download {name}`)"
        )


def config_from_metadata(meta: dict[str, str], source: str) -> ModelConfig:
    if "glide_config" not in meta:
        raise CheckpointError(f"{source} carries no model config; pass the config explicitly")
    return ModelConfig.from_dict(json.loads(meta["glide_config"]))


def load_model(
    name_or_path: str | os.PathLike,
    config: ModelConfig | None = None,
    device: torch.device | str = "cpu",
    fp16: bool = False,
):
    """A UNet from an official name ('base', 'upsample', ...) or a file (our safetensors carry their config)."""
    from .unet import create_model

    key = str(name_or_path)
    digest = None
    if key in OFFICIAL:
        ck = OFFICIAL[key]
        if ck.kind != "unet":
            raise CheckpointError(f"{key!r} is a noised-CLIP checkpoint, not a UNet; load it with glide.clip")
        path = cached_path(key)
        if not path.exists():
            raise CheckpointError(how_to_get(key))
        digest = verify(path)
        config = config or preset(ck.options["preset"], use_fp16=fp16)
    else:
        path = Path(name_or_path)
        verify_card(path)
    sd, meta = load_state_dict(path)
    if config is None:
        config = config_from_metadata(meta, str(path))
    model = create_model(config.replace(use_fp16=False))
    load_into(model, sd, str(path))
    if digest is not None:  # an official file that loaded: now it is known to be good
        _record_if_new(path, digest)
    if fp16:
        model.convert_to_fp16()
    return model.to(device).eval()


def save_model(
    model: torch.nn.Module, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None
) -> str:
    """Save a model as safetensors with its config in the metadata (atomic); returns the file's SHA-256."""
    meta = {"glide_config": model.config.to_json()} | (extra_metadata or {})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save_safetensors(tensors, Path(path), metadata=meta)


def load_clip(spec: str | tuple[str, str], device: torch.device | str = "cpu"):
    """A noised CLIP: 'official' (the released encoders from the cache), (image_enc, text_enc) files in the
    official format, or one safetensors file written by :func:`glide.clip.io.save_clip`."""
    from .clip.model import create_clip_model, load_clip_state_dicts

    digests: dict[str, str] = {}
    if spec == "official":
        for name in ("clip/image-enc", "clip/text-enc"):
            if not is_cached(name):
                raise CheckpointError(how_to_get(name))
            digests[name] = verify(cached_path(name))
        spec = (str(cached_path("clip/image-enc")), str(cached_path("clip/text-enc")))
    if isinstance(spec, (tuple, list)):
        for path in spec if not digests else ():
            verify_card(path)
        image_sd, _ = load_state_dict(spec[0])
        text_sd, _ = load_state_dict(spec[1])
        for sd, path in ((image_sd, spec[0]), (text_sd, spec[1])):
            if "input_blocks.0.0.weight" in sd:
                raise CheckpointError(f"{path} holds {describe_state_dict(sd)}, not a noised-CLIP encoder")
        model = create_clip_model(device="cpu")
        try:
            load_clip_state_dicts(model, image_sd, text_sd)
        except (ValueError, RuntimeError) as e:
            raise CheckpointError(f"{spec[0]} / {spec[1]}: {e}") from e
        for name, digest in digests.items():  # the official files loaded: now they are known to be good
            _record_if_new(cached_path(name), digest)
        return model.to(device).eval()
    from .clip.io import load_trained_clip  # this project's single-file format

    verify_card(spec)
    return load_trained_clip(spec, device=device)
