"""Train the embedded set's attribute classifier and ship it to glidebench/assets (seeded, CPU, minutes).

    python scripts/train_attribute_classifier.py            # defaults: 20k images, 2 epochs, seed 0
    python scripts/train_attribute_classifier.py --out /tmp/clf.safetensors --n-train 2000 --epochs 1

Training data: single-object scenes drawn with ``example_rng(seed, CLASSIFIER_KEY, i)`` (a seed space of its
own, disjoint from the diffusion training stream and from the val/test splits); a quarter of them rendered at
half resolution (32 px) and upsampled, so the classifier also judges 32 px samples. Every batch is degraded
(``attributes.degrade``: blur, colour cast, noise) with a seeded ``torch.Generator``. Held-out accuracy is
measured on the single-object part of the fixed ``test`` split plus fresh scenes from another key, clean and
degraded, and written into the json config next to the weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glidebench.data.attributes import (
    HEADS,
    LABELS,
    AttributeClassifier,
    AttributeNet,
    attribute_accuracy,
    default_weights_path,
    degrade,
    resize_to,
    save_classifier,
)
from glidebench.data.embedded import (
    DATASET_VERSION,
    EmbeddedCaptionSet,
    example_rng,
    render,
    sample_scene,
    single_object,
    to_model_tensor,
)

CLASSIFIER_KEY = 100  # training images of the classifier
HELDOUT_KEY = 101  # fresh held-out images of the classifier


def make_set(
    seed: int, key: int, n: int, input_size: int, lowres_frac: float
) -> tuple[torch.Tensor, dict, list]:
    """Render ``n`` single-object scenes to uint8 ``[n, 3, S, S]`` (S = input_size) plus integer labels per head.

    Scenes are rendered at 64 px, or at 32 px with probability ``lowres_frac``, then resized to ``input_size``.
    """
    scenes, lowres = [], []
    for i in range(n):
        rng = example_rng(seed, key, i)
        scenes.append(sample_scene(rng, max_objects=1, object_probs=[1.0]))
        lowres.append(bool(rng.random() < lowres_frac))
    out = torch.empty(n, 3, input_size, input_size, dtype=torch.uint8)
    for res, flag in ((64, False), (32, True)):
        idx = [i for i in range(n) if lowres[i] == flag]
        for j in range(0, len(idx), 512):
            chunk = idx[j : j + 512]
            x = resize_to(to_model_tensor(np.stack([render(scenes[i], res) for i in chunk])), input_size)
            out[chunk] = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    labels = {
        "colour": [LABELS["colour"].index(s.objects[0].colour) for s in scenes],
        "shape": [LABELS["shape"].index(s.objects[0].shape) for s in scenes],
        "size": [LABELS["size"].index(s.objects[0].size) for s in scenes],
        "background": [LABELS["background"].index(s.background) for s in scenes],
    }
    return out, {k: torch.tensor(v) for k, v in labels.items()}, scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=default_weights_path())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-heldout", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--lowres-frac", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # parameter init
    t0 = time.time()
    x_train, y_train, _ = make_set(args.seed, CLASSIFIER_KEY, args.n_train, args.input_size, args.lowres_frac)
    t_data = time.time() - t0
    print(f"rendered {args.n_train} training images in {t_data:.1f} s")

    net = AttributeNet(width=args.width)
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = args.n_train // args.batch_size
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    t1, c1 = time.time(), time.process_time()
    for epoch in range(args.epochs):
        perm = torch.randperm(args.n_train, generator=gen)
        running = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size : (b + 1) * args.batch_size]
            x = x_train[idx].float() / 127.5 - 1.0
            x = degrade(x, gen, max_blur=1.2 * args.input_size / 64)
            out = net(x)
            loss = sum(F.cross_entropy(out[k], y_train[k][idx]) for k in HEADS)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running += float(loss.detach())
        print(
            f"epoch {epoch + 1}/{args.epochs}: mean loss {running / steps_per_epoch:.4f} ({time.time() - t1:.0f} s)"
        )
    t_train, c_train = time.time() - t1, time.process_time() - c1

    # Held-out: the fixed test split's single-object records plus fresh single-object scenes.
    ds = EmbeddedCaptionSet()
    test = single_object(ds.eval_split("test"))
    clf = AttributeClassifier(
        net,
        {"input_size": args.input_size, "width": args.width, "labels": {k: list(LABELS[k]) for k in HEADS}},
    )
    report: dict[str, dict[str, float]] = {}
    test_imgs = ds.render_records(test)
    report["test_split_64px"] = attribute_accuracy(test_imgs, [r.scene for r in test], clf)
    held_scenes = [
        sample_scene(example_rng(args.seed, HELDOUT_KEY, i), max_objects=1, object_probs=[1.0])
        for i in range(args.n_heldout)
    ]
    held = np.stack([render(s, 64) for s in held_scenes])
    report["fresh_64px"] = attribute_accuracy(held, held_scenes, clf)
    held32 = np.stack([render(s, 32) for s in held_scenes])
    report["fresh_32px"] = attribute_accuracy(held32, held_scenes, clf)
    dgen = torch.Generator().manual_seed(args.seed + 1)
    report["fresh_64px_degraded"] = attribute_accuracy(degrade(to_model_tensor(held), dgen), held_scenes, clf)
    for name, r in report.items():
        r.pop("position_acc", None)
        r.pop("n_position", None)
        print(name, {k: round(v, 4) for k, v in r.items()})

    config = {
        "dataset_version": DATASET_VERSION,
        "input_size": args.input_size,
        "width": args.width,
        "n_params": n_params,
        "labels": {k: list(LABELS[k]) for k in HEADS},
        "train": {
            "script": "scripts/train_attribute_classifier.py",
            "seed": args.seed,
            "n_train": args.n_train,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "lowres_frac": args.lowres_frac,
            "augmentation": f"degrade(max_blur={1.2 * args.input_size / 64:.3g}, max_noise=0.15, max_cast=0.06)",
            "threads": args.threads,
            "render_seconds": round(t_data, 1),
            "train_seconds": round(t_train, 1),
            "train_cpu_seconds": round(c_train, 1),
            "steps": step,
        },
        "heldout_accuracy": report,
    }
    save_classifier(net, config, args.out)
    size = args.out.stat().st_size
    print(
        f"wrote {args.out} ({size / 1024:.0f} KiB, {n_params} parameters) in {time.time() - t0:.0f} s total"
    )


if __name__ == "__main__":
    main()
