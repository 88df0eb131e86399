"""Writing files atomically, and the SHA-256 of a file (a leaf module: it imports nothing from glide).

:func:`atomic_path` is the one way glide writes a file that others read: the writer fills a temporary file in
the destination's directory, which is then flushed to disk (fsync), given the mode a new file gets under the
process's umask (``0o666 & ~umask``; 0644 under the usual umask 022, never a temporary file's 0600) and
renamed over the destination in one step (``os.replace``). A reader sees the old file or the new one, never a
part; on an error (or Ctrl-C) the temporary file is removed and the destination is untouched.
:func:`atomic_write` (bytes or text) and :func:`save_safetensors` are built on it; :func:`commit_file` is its
last step alone, for a file that must keep its own name while it is written (a resumable download).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, so no other thread sees a changed umask)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    flags = os.O_RDONLY if os.name == "posix" else os.O_RDWR
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except OSError:
        if directory:  # not every platform or file system can open a directory: best effort
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(dest) as tmp: write(tmp)`` writes ``dest`` atomically (see the module docstring).

    ``tmp`` is an empty file beside ``dest`` (``.NAME.XXXXXX.tmp``); the writer may write it by name or
    replace it. The destination's directory is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        commit_file(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """The last step of :func:`atomic_path`, for a file written beside ``path`` some other way (a resumable
    download's ``.part``): flush ``tmp`` to disk, give it the umask's mode and rename it over ``path``."""
    _fsync(tmp)
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)
    _fsync(Path(path).parent, directory=True)  # the rename itself survives a crash


def atomic_write(path: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` (bytes, or text in ``encoding``) to ``path`` atomically; returns the path."""
    blob = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(blob)
    return Path(path)


def save_safetensors(
    tensors: Mapping[str, Any], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> str:
    """Write tensors as a safetensors file atomically (:func:`atomic_path`); returns the file's SHA-256."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata is not None else None)
    return sha256_file(path)


def file_digest(path: str | os.PathLike, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """The ``algo`` digest (hex; any hashlib name) of a file's bytes, read in chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 (hex) of a file's bytes, read in chunks."""
    return file_digest(path, "sha256", chunk)
