"""Checkpoint loading, saving, the download cache and its errors."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
import torch

from glide import checkpoints
from glide.checkpoints import CheckpointError, load_model, save_model

from .helpers import tiny_config, tiny_model


def test_safetensors_round_trip_carries_config(tmp_path):
    model = tiny_model()
    digest = save_model(model, tmp_path / "m.safetensors")
    assert len(digest) == 64
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_official_pt_format_loads_with_weights_only(tmp_path):
    model = tiny_model()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", config=model.config)
    assert torch.equal(loaded.out[2].weight, model.out[2].weight)


def test_wrong_variant_names_both_models(tmp_path):
    torch.save(tiny_model().state_dict(), tmp_path / "base.pt")
    with pytest.raises(
        CheckpointError,
        match=r"base\.pt holds a GLIDE base UNet, but the model being loaded is a GLIDE base-inpaint",
    ):
        load_model(tmp_path / "base.pt", config=tiny_config(inpaint=True))


def test_truncated_file(tmp_path):
    save_model(tiny_model(), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors.*truncated or corrupt"):
        load_model(tmp_path / "cut.safetensors")
    torch.save(tiny_model().state_dict(), tmp_path / "m.pt")
    pt = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(pt[: len(pt) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt could not be loaded"):
        load_model(tmp_path / "cut.pt", config=tiny_config())


def test_not_a_checkpoint_and_missing_file(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt could not be loaded"):
        load_model(tmp_path / "notes.pt", config=tiny_config())
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pt", config=tiny_config())
    torch.save({"a": 1}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_model(tmp_path / "obj.pt", config=tiny_config())


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt", _use_new_zipfile_serialization=True)
    with pytest.raises(CheckpointError, match=r"evil\.pt is refused for safety"):
        load_model(tmp_path / "evil.pt", config=tiny_config())


class PickledThing:
    """A plain custom class: torch.load(weights_only=True) refuses to unpickle it."""

    def __init__(self) -> None:
        self.note = "not a tensor"


def test_pickled_objects_are_refused_with_a_safety_message(tmp_path):
    sd = tiny_model().state_dict() | {"extra": PickledThing()}
    torch.save(sd, tmp_path / "custom.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "custom.pt", config=tiny_config())
    message = str(info.value)
    assert str(tmp_path / "custom.pt") in message
    assert "non-tensor (pickled Python) objects" in message and "PickledThing" in message
    assert "refused for safety" in message and "must not be loaded unless its source is trusted" in message
    # not torch's own hint (cut short, it read as advice to retry with weights_only=False)
    assert "weights_only=False" not in message and "Re-running" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_official_checkpoint_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"python -m glide download base"):
        load_model("base")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (enough for the resume test); quiet."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_resumes_records_and_verifies_sha256(tmp_path, server, monkeypatch):
    root, url = server
    model = tiny_model()
    torch.save(model.state_dict(), root / "base.pt")
    payload = (root / "base.pt").read_bytes()
    cache = tmp_path / "cache"
    monkeypatch.setenv("GLIDE_CACHE", str(cache))
    monkeypatch.setitem(
        checkpoints.OFFICIAL,
        "base",
        checkpoints.OfficialCheckpoint("base", f"{url}/base.pt", "unet", {"preset": "base"}),
    )
    cache.mkdir()
    (cache / "base.pt.part").write_bytes(payload[:1000])  # an interrupted earlier download
    path = checkpoints.download("base", progress=False)
    assert path.read_bytes() == payload
    assert not (cache / "base.pt.part").exists()
    recorded = (cache / "base.sha256").read_text().split()[0]
    assert recorded == checkpoints.sha256_file(path)
    loaded = load_model("base", config=model.config)  # verified against the record on load
    assert torch.equal(loaded.out[2].weight, model.out[2].weight)
    path.write_bytes(payload[:-10] + b"0123456789")  # the file changes after download
    with pytest.raises(CheckpointError, match="SHA-256 .* was recorded"):
        load_model("base", config=model.config)


def _official_tiny_base(
    monkeypatch, cache: Path, sha256: str | None = None, url: str = "http://127.0.0.1:9/x"
):
    """The official 'base' entry pointed at a tiny model (its preset monkeypatched), cache in ``cache``."""
    monkeypatch.setenv("GLIDE_CACHE", str(cache))
    monkeypatch.setitem(
        checkpoints.OFFICIAL,
        "base",
        checkpoints.OfficialCheckpoint(
            "base", url, "unet", {"preset": "base"}, **({"sha256": sha256} if sha256 else {})
        ),
    )
    monkeypatch.setattr(checkpoints, "preset", lambda name, use_fp16=False: tiny_config())
    cache.mkdir(parents=True, exist_ok=True)
    return cache / "base.pt", cache / "base.sha256"


def test_a_file_that_fails_to_load_is_not_recorded_and_the_right_file_then_loads(tmp_path, monkeypatch):
    model = tiny_model()
    torch.save(model.state_dict(), tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    path, record = _official_tiny_base(monkeypatch, tmp_path / "cache")
    path.write_bytes(good[: len(good) // 2])  # a truncated copy in the cache
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_model("base")
    assert not record.exists()  # its hash was not taken as the official one
    torch.save(tiny_model(inpaint=True).state_dict(), path)  # the wrong variant: loads, but not into 'base'
    with pytest.raises(CheckpointError, match="holds a GLIDE base-inpaint UNet"):
        load_model("base")
    assert not record.exists()
    path.write_bytes(good)  # the user copies in the right file: accepted, and now recorded
    loaded = load_model("base")
    assert torch.equal(loaded.out[2].weight, model.out[2].weight)
    assert record.read_text().split()[0] == checkpoints.sha256_file(path)
    path.write_bytes(good[:-10] + b"0123456789")  # a later change is caught against the record
    with pytest.raises(CheckpointError, match="changed or is corrupt"):
        load_model("base")


def test_a_known_registry_sha256_checks_cache_and_download(tmp_path, server, monkeypatch):
    root, url = server
    model = tiny_model()
    torch.save(model.state_dict(), root / "base.pt")
    good = (root / "base.pt").read_bytes()
    digest = checkpoints.sha256_file(root / "base.pt")
    path, record = _official_tiny_base(monkeypatch, tmp_path / "cache", sha256=digest, url=f"{url}/base.pt")
    path.write_bytes(good[:-10] + b"0123456789")  # copied in, no record: checked against the registry
    with pytest.raises(CheckpointError, match="the official 'base' file has"):
        load_model("base")
    assert not record.exists()
    path.unlink()
    (root / "base.pt").write_bytes(good[:-10] + b"0123456789")  # the source serves other bytes
    with pytest.raises(CheckpointError, match="not the official"):
        checkpoints.download("base", progress=False)
    assert not path.exists() and not path.with_suffix(".pt.part").exists() and not record.exists()
    (root / "base.pt").write_bytes(good)
    assert checkpoints.download("base", progress=False) == path
    assert record.read_text().split()[0] == digest  # a verified download is recorded
    assert torch.equal(load_model("base").out[2].weight, model.out[2].weight)


def test_official_clip_files_are_recorded_only_once_they_load(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path))
    clip = _tiny_clip()
    image, text = checkpoints.cached_path("clip/image-enc"), checkpoints.cached_path("clip/text-enc")
    torch.save(clip.image_encoder.state_dict(), image)
    torch.save(clip.text_encoder.state_dict(), text)
    data = text.read_bytes()
    text.write_bytes(data[: len(data) // 2])
    tiny = _tiny_clip()  # load_clip builds the official size: build this tiny one instead
    monkeypatch.setattr("glide.clip.model.create_clip_model", lambda device="cpu": tiny)
    with pytest.raises(CheckpointError):
        checkpoints.load_clip("official")
    assert not image.with_suffix(".sha256").exists() and not text.with_suffix(".sha256").exists()
    text.write_bytes(data)
    checkpoints.load_clip("official")
    for p in (image, text):
        assert p.with_suffix(".sha256").read_text().split()[0] == checkpoints.sha256_file(p)


def test_atomic_writers_leave_no_temporary_and_follow_the_umask(tmp_path):
    import os

    from glide import fileio

    old = os.umask(0o027)
    try:
        assert fileio.current_umask() == 0o027
        fileio.atomic_write(tmp_path / "a" / "x.txt", "hello\n")
        save_model(tiny_model(), tmp_path / "a" / "m.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "x.txt").read_text() == "hello\n"
    for name in ("x.txt", "m.safetensors"):
        assert (tmp_path / "a" / name).stat().st_mode & 0o777 == 0o640  # 0o666 & ~0o027, not 0600
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["m.safetensors", "x.txt"]
    with pytest.raises(RuntimeError, match="writer failed"):
        with fileio.atomic_path(tmp_path / "a" / "x.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert (tmp_path / "a" / "x.txt").read_text() == "hello\n"  # the old file is untouched
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["m.safetensors", "x.txt"]
    assert checkpoints.sha256_file is fileio.sha256_file


def _tiny_clip():
    from glide.clip.config import ClipConfig
    from glide.clip.model import create_clip_model

    cfg = ClipConfig.from_dict(
        dict(
            n_embd=16,
            n_head_state_text=16,
            n_head_text=1,
            n_xf_blocks_text=1,
            n_head_state_image=16,
            n_head_image=1,
            n_xf_blocks_image=1,
            image_size=16,
            patch_size=4,
            n_vocab=49408,
        )
    )
    return create_clip_model(config=cfg, device="cpu")


def test_clip_checkpoint_given_as_unet_and_the_reverse(tmp_path):
    clip = _tiny_clip()
    torch.save(clip.image_encoder.state_dict(), tmp_path / "clip_image_enc.pt")
    torch.save(clip.text_encoder.state_dict(), tmp_path / "clip_text_enc.pt")
    with pytest.raises(
        CheckpointError, match=r"clip_image_enc\.pt holds a noised-CLIP image encoder, but the model"
    ):
        load_model(tmp_path / "clip_image_enc.pt", config=tiny_config())
    with pytest.raises(CheckpointError, match=r"clip_text_enc\.pt holds a noised-CLIP text encoder"):
        load_model(tmp_path / "clip_text_enc.pt", config=tiny_config())
    torch.save(tiny_model().state_dict(), tmp_path / "base.pt")
    with pytest.raises(CheckpointError, match=r"base\.pt holds a GLIDE base UNet, not a noised-CLIP encoder"):
        checkpoints.load_clip((str(tmp_path / "base.pt"), str(tmp_path / "clip_text_enc.pt")))
    with pytest.raises(CheckpointError, match="look swapped"):
        checkpoints.load_clip((str(tmp_path / "clip_text_enc.pt"), str(tmp_path / "clip_image_enc.pt")))
