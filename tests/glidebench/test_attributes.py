"""Tests for the embedded set's attribute check: the shipped classifier, its loading, and the position rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from glide.fileio import sha256_file
from glidebench.data import attributes as A
from glidebench.data.attributes import (
    AttributeClassifier,
    AttributeNet,
    attribute_accuracy,
    degrade,
    foreground,
    position_accuracy,
    save_classifier,
    to_float_nchw,
    to_uint8_nhwc,
)
from glidebench.data.embedded import (
    EmbeddedCaptionSet,
    Scene,
    example_rng,
    make_caption,
    parse_stated,
    render,
    sample_scene,
    short_caption,
    single_object,
    to_model_tensor,
)

FRESH_KEY = 4242  # a seed space used neither by training, the classifier's own data, nor val/test


@pytest.fixture(scope="module")
def classifier() -> AttributeClassifier:
    return AttributeClassifier.load()


@pytest.fixture(scope="module")
def fresh() -> tuple[np.ndarray, list[Scene]]:
    scenes = [
        sample_scene(example_rng(7, FRESH_KEY, i), max_objects=1, object_probs=[1.0]) for i in range(300)
    ]
    return np.stack([render(s, 64) for s in scenes]), scenes


def untrained(width: int = 4) -> tuple[AttributeNet, dict]:
    torch.manual_seed(0)
    net = AttributeNet(width=width).eval()
    cfg = {
        "dataset_version": A.DATASET_VERSION,
        "input_size": 16,
        "width": width,
        "labels": {k: list(v) for k, v in A.LABELS.items()},
    }
    return net, cfg


# ---------------------------------------------------------------- the shipped classifier


def test_shipped_classifier_is_small_and_records_its_accuracy() -> None:
    path = A.default_weights_path()
    assert path.is_file() and path.stat().st_size < 1024 * 1024
    cfg = json.loads(A.config_path_for(path).read_text())
    assert cfg["dataset_version"] == A.DATASET_VERSION
    held = cfg["heldout_accuracy"]["fresh_64px"]
    assert held["colour_acc"] >= 0.98 and held["shape_acc"] >= 0.98


def test_shipped_classifier_accuracy_on_fresh_images(classifier, fresh) -> None:
    images, scenes = fresh
    acc = attribute_accuracy(images, scenes, classifier)
    assert acc["n"] == len(scenes)
    assert acc["colour_acc"] >= 0.95
    assert acc["shape_acc"] >= 0.95
    assert acc["size_acc"] >= 0.95
    assert acc["background_acc"] >= 0.95
    # independent recount from predict()
    pred = classifier.predict(images)
    manual = np.mean([p == s.objects[0].colour for p, s in zip(pred["colour"], scenes)])
    assert acc["colour_acc"] == pytest.approx(manual)
    np.testing.assert_allclose(pred["shape_probs"].sum(axis=1), 1.0, rtol=1e-5)


def test_shipped_classifier_on_32px_and_degraded_images(classifier, fresh) -> None:
    _, scenes = fresh
    low = np.stack([render(s, 32) for s in scenes])
    acc = attribute_accuracy(low, scenes, classifier)
    assert acc["colour_acc"] >= 0.95 and acc["shape_acc"] >= 0.9
    noisy = degrade(
        to_model_tensor(np.stack([render(s, 64) for s in scenes])), torch.Generator().manual_seed(1)
    )
    acc = attribute_accuracy(noisy, scenes, classifier)
    assert acc["colour_acc"] >= 0.95 and acc["shape_acc"] >= 0.9


def test_wrong_captions_score_low(classifier, fresh) -> None:
    images, scenes = fresh
    # pair every image with the next image's scene: colours then agree only by chance (~1/7)
    acc = attribute_accuracy(images, scenes[1:] + scenes[:1], classifier)
    assert acc["colour_acc"] < 0.4 and acc["shape_acc"] < 0.5


def test_mixed_batch_judges_single_objects_and_positions(classifier) -> None:
    ds = EmbeddedCaptionSet()
    recs = ds.eval_split("test", n=60)
    imgs = ds.render_records(recs)
    scenes = [r.scene for r in recs]
    acc = attribute_accuracy(imgs, scenes, classifier)
    assert acc["n"] == len(single_object(recs))
    assert acc["n_position"] == len(recs) - len(single_object(recs))
    assert acc["position_acc"] == 1.0
    with pytest.raises(ValueError, match="one scene per image"):
        attribute_accuracy(imgs[:3], scenes[:2], classifier)


# ---------------------------------------------------------------- loading and saving


def test_missing_files_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_attribute_classifier"):
        AttributeClassifier.load(tmp_path / "nope.safetensors")
    shutil.copy(A.default_weights_path(), tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError, match=r"w\.json is missing"):
        AttributeClassifier.load(tmp_path / "w.safetensors")


def test_corrupt_files_give_a_clear_error(tmp_path: Path) -> None:
    net, cfg = untrained()
    w = tmp_path / "c.safetensors"
    save_classifier(net, cfg, w)
    AttributeClassifier.load(w)  # intact: loads
    good = w.read_bytes()

    w.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        AttributeClassifier.load(w)

    # a corrupt file whose sha256 was updated still fails, now inside safetensors
    meta = json.loads(A.config_path_for(w).read_text())
    meta["weights_sha256"] = sha256_file(w)
    A.config_path_for(w).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="corrupt"):
        AttributeClassifier.load(w)

    w.write_bytes(good)
    A.config_path_for(w).write_text("{not json")
    with pytest.raises(ValueError, match="not valid json"):
        AttributeClassifier.load(w)

    A.config_path_for(w).write_text(
        json.dumps({**meta, "weights_sha256": sha256_file(w), "dataset_version": "v0"})
    )
    with pytest.raises(ValueError, match="trained on dataset 'v0'"):
        AttributeClassifier.load(w)


def test_save_load_roundtrip_is_exact(tmp_path: Path) -> None:
    net, cfg = untrained()
    w = tmp_path / "sub" / "r.safetensors"
    written = save_classifier(net, cfg, w)
    assert written["weights_sha256"] == sha256_file(w)
    assert not list(w.parent.glob("*.tmp"))
    clf = AttributeClassifier.load(w)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        ref = net(x)
    got = clf.logits(x)
    for k in A.HEADS:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0)


# ---------------------------------------------------------------- conventions and pieces


def test_uint8_nhwc_and_float_nchw_inputs_agree(tmp_path: Path) -> None:
    net, cfg = untrained()
    clf = AttributeClassifier(net, cfg)
    scenes = [sample_scene(example_rng(1, FRESH_KEY, i)) for i in range(4)]
    u8 = np.stack([render(s, 16) for s in scenes])
    a = clf.logits(u8)
    b = clf.logits(to_model_tensor(u8))
    c = clf.logits(u8[0])  # a single HWC image
    for k in A.HEADS:
        torch.testing.assert_close(a[k], b[k])
        torch.testing.assert_close(c[k], a[k][:1])
    assert np.array_equal(to_uint8_nhwc(to_float_nchw(u8)), u8)
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        to_float_nchw(u8.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        to_float_nchw(u8.astype(np.float32))


def test_foreground_channel_ignores_polarity() -> None:
    x = -torch.ones(1, 3, 16, 16)
    x[:, :, 4:10, 5:12] = 1.0  # white box on black
    fg = foreground(x)
    torch.testing.assert_close(fg, foreground(-x))
    assert float(fg[0, 0, 6, 6]) == pytest.approx(2 * 3**0.5 - 0.5)
    assert float(fg[0, 0, 0, 0]) == pytest.approx(-0.5)


def test_degrade_is_seeded_and_reduces_to_identity() -> None:
    x = to_model_tensor(np.stack([render(sample_scene(example_rng(2, FRESH_KEY, i)), 32) for i in range(4)]))
    a = degrade(x, torch.Generator().manual_seed(5))
    b = degrade(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    same = degrade(x, torch.Generator().manual_seed(5), max_blur=0, max_noise=0, max_cast=0)
    torch.testing.assert_close(same, x, atol=1e-6, rtol=0)
    flat = torch.full((2, 3, 16, 16), 0.3)
    blurred = degrade(flat, torch.Generator().manual_seed(0), max_blur=2.0, max_noise=0, max_cast=0)
    torch.testing.assert_close(blurred, flat)  # blur kernels sum to one


def test_position_check_flags_reversed_relations() -> None:
    scenes = [s for s in (sample_scene(example_rng(3, FRESH_KEY, i)) for i in range(80)) if s.n_objects > 1]
    imgs = np.stack([render(s, 64) for s in scenes])
    assert position_accuracy(imgs, scenes) == {"position_acc": 1.0, "n": float(len(scenes))}
    rotated = imgs[:, ::-1, ::-1].copy()  # 180 degrees: every above/below/left/right flips
    assert position_accuracy(rotated, scenes)["position_acc"] == 0.0
    assert np.isnan(position_accuracy(imgs[:0], [])["position_acc"])


# ---------------------------------------------------------------- short captions: judge what is stated


def test_short_captions_judge_only_stated_attributes(classifier, fresh) -> None:
    images, scenes = fresh
    rngs = [example_rng(9, FRESH_KEY, i) for i in range(len(scenes))]
    captions = [short_caption(s, r) for s, r in zip(scenes, rngs)]
    stated = [parse_stated(c)["objects"][0] for c in captions]
    has_colour = np.array([c is not None for _, c, _ in stated])
    assert 0 < has_colour.sum() < len(scenes)  # both kinds occur, so the mask matters
    # pair every image with the next scene: a stated colour then agrees by chance only, an unstated one is
    # not judged at all; with every scene's own image, everything stated is right
    shifted = scenes[1:] + scenes[:1]
    exact = attribute_accuracy(images, shifted, classifier)
    short = attribute_accuracy(images, shifted, classifier, captions=captions)
    pred = classifier.predict(images)
    manual = np.mean([p == s.objects[0].colour for p, s, k in zip(pred["colour"], shifted, has_colour) if k])
    assert short["colour_acc"] == pytest.approx(manual)
    assert short["colour_acc"] < 0.4 and exact["colour_acc"] < 0.4
    # the shape is always stated; object_acc counts an unstated colour or size as right
    assert short["shape_acc"] == pytest.approx(exact["shape_acc"])
    assert short["object_acc"] >= exact["object_acc"]
    own = attribute_accuracy(images, scenes, classifier, captions=captions)
    assert own["colour_acc"] >= 0.95 and own["object_acc"] >= 0.9
    with pytest.raises(ValueError, match="one caption per image"):
        attribute_accuracy(images, scenes, classifier, captions=captions[:-1])


def test_short_captions_check_positions_among_named_objects_only(classifier) -> None:
    scenes = [s for s in (sample_scene(example_rng(3, FRESH_KEY, i)) for i in range(120)) if s.n_objects == 3]
    imgs = np.stack([render(s, 64) for s in scenes])
    # claim the opposite second relation: judged on the whole chain every image fails; a caption that names
    # only the first two objects (colours stated) is judged on their relation alone, which holds
    flip = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
    wrong = []
    for s in scenes:
        rel = (s.relations[0], flip[s.relations[1]])
        wrong.append(Scene(s.objects, s.background, rel, make_caption(s.objects, rel, s.background)))
    assert position_accuracy(imgs, wrong)["position_acc"] == 0.0
    two = [make_caption(s.objects[:2], s.relations[:1], s.background) for s in scenes]
    acc = attribute_accuracy(imgs, wrong, classifier, captions=two)
    assert acc["n_position"] == len(scenes) and acc["position_acc"] == 1.0
    # a caption naming one object, or leaving a named object's colour unsaid, has no position to judge
    one = [f"a {s.objects[0].shape}" for s in scenes]
    assert attribute_accuracy(imgs, scenes, classifier, captions=one)["n_position"] == 0
    blank = [
        f"a {s.objects[0].colour} {s.objects[0].shape} {s.relations[0]} a {s.objects[1].shape}"
        for s in scenes
    ]
    assert attribute_accuracy(imgs, scenes, classifier, captions=blank)["n_position"] == 0
    # the relation between the named two is still checked: a 180-degree rotation flips it
    rotated = imgs[:, ::-1, ::-1].copy()
    assert attribute_accuracy(rotated, scenes, classifier, captions=two)["position_acc"] == 0.0
