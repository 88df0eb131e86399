"""The generation store: one PNG per global index per setting, written atomically, and atomic file helpers.

Owns the on-disk layout of generated images in a run directory (the run-directory contract):

    RUN_DIR/images/<setting_id>/<index:06d>.png

A file either exists whole or not at all: it is encoded in memory, written to a unique temporary name in the
same directory, flushed, and renamed over its final name (``os.replace`` is atomic on POSIX). A process
killed with SIGKILL therefore leaves at most a stray ``.*.tmp`` file, which :meth:`ImageStore.clean` removes
on the next start, never a truncated PNG. Resuming is "write what is missing": :meth:`ImageStore.missing`.

PNG encoding (Pillow, default zlib level) is deterministic, so identical pixels give identical bytes, which
is what the resume and sharding tests compare.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from glide.fileio import atomic_path as _atomic_path
from glide.fileio import current_umask

from .images_io import to_rgb_array
from .paths import PathEscapeError as PathEscapeError  # re-exported: the store's path check
from .paths import ensure_under as ensure_under

if TYPE_CHECKING:
    import torch


def file_mode() -> int:
    """The mode a new file gets under the process umask (``0o666 & ~umask``), as ``open()`` would give it."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """The atomic writer (:func:`glide.fileio.atomic_path`: a temporary file beside ``path``, fsync'ed, given
    the umask's mode (never ``mkstemp``'s 0600, so results can be shared with a group) and renamed over
    ``path``; removed on any error, so nothing half-written is left), plus the harness's message for a full
    disk, which names the path and how to go on."""
    path = Path(path)
    try:
        with _atomic_path(path) as tmp:
            yield tmp
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(
                e.errno,
                f"no space left on the device of {path.parent} while writing {path.name} (nothing half-written "
                "was left); free some space or choose another --out, then run the same command again to resume",
            ) from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove_stale_tmp(
    directory: str | os.PathLike, max_age_s: float = 600.0, names: Iterable[str] | None = None
) -> int:
    """Remove ``.*.tmp`` files of :func:`atomic_write_bytes` in ``directory`` older than ``max_age_s`` (a live
    writer's file is seconds old; a killed writer's stays forever). ``names``: only temp files of these targets."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    wanted = set(names) if names is not None else None
    now, n = time.time(), 0
    for p in directory.glob(".*.tmp"):
        if wanted is not None and not any(p.name.startswith(f".{w}.") for w in wanted):
            continue
        with contextlib.suppress(FileNotFoundError):
            if now - p.stat().st_mtime >= max_age_s:
                p.unlink()
                n += 1
    return n


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), numpy scalars -> Python, tuples -> lists, recursively."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj: Any) -> str:
    """Stable, human-readable JSON (sorted keys off: callers choose the order) with NaN written as null."""
    return json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, to_json(obj).encode("utf-8"))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it so that it is written again") from e


class CorruptFileError(ValueError):
    """A file the harness wrote earlier (a cache, a table) cannot be read back: truncated or replaced."""


def read_checked(path: str | os.PathLike, load: Any, what: str, fix: str = "delete it to recompute") -> Any:
    """``load(path)``, with a truncated or corrupt file (a zip without its directory, an array shorter than its
    header, bytes that are not the format) turned into one :class:`CorruptFileError` that names the file and
    the fix, instead of a traceback (``zipfile.BadZipFile`` is neither an OSError nor a ValueError)."""

    try:
        return load(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptFileError(
            f"{what} {path} is truncated or corrupt ({type(e).__name__}: {e}); {fix}"
        ) from e


def encode_png(image_hwc: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (deterministic)."""
    a = np.asarray(image_hwc)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected a uint8 image [H, W, 3], got {a.dtype} {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a), "RGB").save(buf, format="PNG")
    return buf.getvalue()


class ImageStore:
    """The images of one setting: ``root/<index:06d>.png`` for global indices 0..N-1."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, run_dir: str | os.PathLike, setting_id: str) -> ImageStore:
        """The store of ``setting_id`` in ``run_dir`` (``RUN_DIR/images/<setting_id>``), refused when the id
        would lead out of ``RUN_DIR/images`` (``../x``, ``a/b``, an absolute path)."""
        images = Path(run_dir) / "images"
        if not setting_id or "/" in setting_id or "\\" in setting_id or setting_id in (".", ".."):
            raise PathEscapeError(f"setting id {setting_id!r} is not one plain folder name under {images}")
        return cls(ensure_under(images, images / setting_id))

    def path(self, index: int) -> Path:
        if index < 0:
            raise ValueError(f"image index must be >= 0, got {index}")
        return self.root / f"{index:06d}.png"

    def has(self, index: int) -> bool:
        p = self.path(index)
        return p.is_file() and p.stat().st_size > 0

    def missing(self, indices: Iterable[int]) -> list[int]:
        return [i for i in indices if not self.has(i)]

    def clean(self, indices: Iterable[int] | None = None) -> int:
        """Remove temporary files left by a killed writer (only those of ``indices`` when given: other
        workers may be writing theirs right now); returns how many were removed."""
        if indices is None:
            return remove_stale_tmp(self.root, max_age_s=0)
        names = {self.path(i).name for i in indices}
        n = 0
        for p in self.root.glob(".*.tmp") if self.root.is_dir() else ():
            if p.name[1:].split(".png.", 1)[0] + ".png" in names:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    n += 1
        return n

    def write(self, index: int, image_hwc: np.ndarray) -> None:
        atomic_write_bytes(ensure_under(self.root, self.path(index)), encode_png(image_hwc))

    def read(self, index: int) -> np.ndarray:
        """uint8 [H, W, 3]; an unreadable file is an error that says how to regenerate it."""
        p = self.path(index)
        try:
            with Image.open(p) as im:
                return to_rgb_array(im, p)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"generated image {p} is missing; run the same command again to resume"
            ) from None
        except OSError as e:
            raise OSError(
                f"generated image {p} is unreadable ({e}); delete it and run the same command again"
            ) from e

    def batches(self, indices: Sequence[int], batch_size: int = 64) -> Iterator[torch.Tensor]:
        """uint8 NCHW tensors of ``indices``, ``batch_size`` at a time (never all images in memory)."""

        for lo in range(0, len(indices), batch_size):
            arrays = [self.read(i) for i in indices[lo : lo + batch_size]]
            yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def fingerprint(self, indices: Sequence[int]) -> str:
        """SHA-256 over (index, file SHA-256) of ``indices``: the image set's identity for feature caches."""
        h = hashlib.sha256()
        for i in indices:
            h.update(f"{i}:".encode())
            h.update(hashlib.sha256(self.path(i).read_bytes()).digest())
        return h.hexdigest()
