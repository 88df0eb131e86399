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
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_model(tmp_path / "evil.pt", config=tiny_config())


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
