"""ImageStore and the atomic file helpers: exact round trips, deterministic bytes, nothing half-written."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glidebench.runner.generate import chunk_bounds, owned_chunks, read_timing
from glidebench.spec import Shard, Worker
from glidebench.store import (
    ImageStore,
    atomic_write_bytes,
    atomic_write_json,
    encode_png,
    remove_stale_tmp,
)


def _img(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_png_round_trip_is_exact_and_deterministic(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "cfg-3")
    a = _img(0)
    store.write(7, a)
    assert store.path(7).name == "000007.png"
    assert np.array_equal(store.read(7), a)
    assert np.array_equal(np.asarray(Image.open(store.path(7))), a)  # an ordinary PNG
    assert encode_png(a) == encode_png(a.copy()) == store.path(7).read_bytes()
    with pytest.raises(ValueError, match="uint8 image"):
        store.write(8, a.astype(np.float32))


def test_missing_batches_and_fingerprint(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    imgs = {i: _img(i) for i in (0, 1, 3)}
    for i, a in imgs.items():
        store.write(i, a)
    assert store.missing(range(5)) == [2, 4]
    batches = list(store.batches([0, 1, 3], batch_size=2))
    assert [b.shape for b in batches] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    assert torch.equal(batches[1][0], torch.from_numpy(imgs[3]).permute(2, 0, 1))
    fp = store.fingerprint([0, 1, 3])
    h = hashlib.sha256()
    for i in (0, 1, 3):
        h.update(f"{i}:".encode() + hashlib.sha256(store.path(i).read_bytes()).digest())
    assert fp == h.hexdigest()
    changed = imgs[1].copy()
    changed[0, 0, 0] ^= 1  # one level in one pixel
    store.write(1, changed)
    assert store.fingerprint([0, 1, 3]) != fp


def test_failed_write_leaves_neither_file_nor_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ImageStore(tmp_path)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write(0, _img(0))
    assert list(tmp_path.iterdir()) == []


def test_clean_removes_only_the_given_indices_temp_files(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    for i in (1, 4, 9):
        (tmp_path / f".{i:06d}.png.x1y2.tmp").write_bytes(b"half")
    assert store.clean([3, 4, 5]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".000001.png.x1y2.tmp", ".000009.png.x1y2.tmp"]
    assert store.clean() == 2 and list(tmp_path.iterdir()) == []


def test_remove_stale_tmp_keeps_fresh_files(tmp_path: Path) -> None:
    old, fresh = tmp_path / ".results.csv.aaa.tmp", tmp_path / ".results.json.bbb.tmp"
    old.write_text("x")
    fresh.write_text("y")
    os.utime(old, (1, 1))
    assert remove_stale_tmp(tmp_path, max_age_s=600) == 1
    assert not old.exists() and fresh.exists()


def test_unreadable_image_names_the_fix(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    store.path(0).write_bytes(b"not a png")
    with pytest.raises(OSError, match="000000.png is unreadable.*delete it and run the same command again"):
        store.read(0)
    with pytest.raises(FileNotFoundError, match="run the same command again to resume"):
        store.read(1)


def test_json_has_no_nan_and_is_atomic(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    atomic_write_json(p, {"fid": math.nan, "k": np.float32(1.5), "t": (1, 2)})
    assert json.loads(p.read_text()) == {"fid": None, "k": 1.5, "t": [1, 2]}
    atomic_write_bytes(p, b"{}")
    assert p.read_bytes() == b"{}" and [q.name for q in tmp_path.iterdir()] == ["r.json"]


def test_chunks_cover_every_index_once_for_any_worker_count() -> None:
    assert chunk_bounds(8, 3) == [(0, 3), (3, 6), (6, 8)]
    for n_workers in (1, 2, 3, 5):
        owned = [owned_chunks(7, Worker.make(Shard(i, n_workers))) for i in range(n_workers)]
        flat = sorted(k for ks in owned for k in ks)
        assert flat == list(range(7))


def test_read_timing_sums_chunk_records(tmp_path: Path) -> None:
    tdir = tmp_path / "timing" / "cfg-3"
    for k, secs in ((0, 1.5), (2, 0.5)):
        atomic_write_json(tdir / f"chunk_{k:06d}.json", {"chunk": k, "lo": 3 * k, "hi": min(3 * k + 3, 8),
                          "written": 3, "sampled": min(3, 8 - 3 * k), "seconds": secs,
                          "evals_per_image": {"base": 50.0}, "worker": "0/1"})  # fmt: skip
    t = read_timing(tmp_path, "cfg-3", 8, 3)
    assert (t.seconds, t.images, t.chunks_timed, t.chunks_total, t.evals_per_image) == (2.0, 5, 2, 3, 50.0)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """Run files (images, results, spec, features) get the mode open() would give them, not mkstemp's 0600."""
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "results.json", {"fid": 1.0})
        ImageStore(tmp_path / "images").write(0, _img(0))
    finally:
        os.umask(old)
    for p in (tmp_path / "results.json", tmp_path / "images" / "000000.png"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, oct(p.stat().st_mode)


def test_full_disk_names_the_path_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    target = tmp_path / "results.csv"
    target.write_text("old\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"new\n")
    assert info.value.errno == errno.ENOSPC
    assert (
        str(tmp_path) in str(info.value) and "results.csv" in str(info.value) and "--out" in str(info.value)
    )
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
