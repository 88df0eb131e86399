"""Runs resumed, sharded or measured again under changed conditions (docs/reliability.md): a generator that
declares itself non-deterministic, another CPU thread count, and reference images changed after a run
finished. Each gets a one-line note or a one-line refusal, and the run directory records what happened."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from glidebench.cli import main
from glidebench.generators import Capabilities

from .harness import only_run_dir
from .test_coco import make_coco
from .toy_generators import ToyGenerator

TOY = "tests.glidebench.toy_generators:make"
RANDOM_TOY = "tests.glidebench.test_reliability_runs:random_toy"


class RandomToy(ToyGenerator):
    """A toy whose images come from an unseeded generator: it says so (``capabilities`` or an attribute)."""

    def __init__(self, size: int = 8, declare: str = "capabilities") -> None:
        super().__init__(size=size, name="random-toy")
        if declare == "capabilities":
            self.capabilities = Capabilities(
                guidance=("cfg", "none"), resolution=self.size, deterministic=False
            )
        else:
            self.deterministic = False

    def identity(self) -> dict[str, str]:
        return {"random-toy": f"v1:size={self.size}"}

    def generate(self, captions, seeds, setting, options):
        return np.random.default_rng().integers(
            0, 256, (len(captions), self.size, self.size, 3), dtype=np.uint8
        )


def random_toy(**kwargs) -> RandomToy:
    return RandomToy(**kwargs)


def _args(out: Path, generator: str, *extra: str) -> list[str]:
    return [
        "run", "coco-fid", "--generator", generator, "--limit", "8", "--cfg", "2", "--batch-size", "2",
        "--reference-size", "12", "--out", str(out), "--no-report", "--quiet", *extra,
    ]  # fmt: skip


def _notes(text: str) -> list[str]:
    """The notes of a resumed or sharded run (each names provenance.json's sampling_sessions)."""
    return [line.strip() for line in text.splitlines() if "note:" in line and "sampling_sessions" in line]


def test_declares_deterministic_reads_capabilities_and_the_attribute() -> None:
    from glidebench.generators.plugins import declares_deterministic

    assert declares_deterministic(ToyGenerator())
    assert not declares_deterministic(RandomToy(declare="capabilities"))
    assert not declares_deterministic(RandomToy(declare="attribute"))


def test_a_non_deterministic_generator_gets_a_note_when_sharded_and_when_resumed(env: Path, capsys) -> None:
    out = env / "runs"
    assert main(_args(out, RANDOM_TOY, "--shard", "0/2")) == 0
    notes = _notes(capsys.readouterr().out)
    assert len(notes) == 1 and "generator random-toy declares deterministic=False" in notes[0], notes
    assert "of this process and of the other workers, and no rerun" in notes[0]
    assert main(_args(out, RANDOM_TOY, "--shard", "1/2")) == 0
    assert any("declares deterministic=False" in n for n in _notes(capsys.readouterr().out))
    run = only_run_dir(out)
    sessions = json.loads((run / "provenance.json").read_text())["sampling_sessions"]
    assert [(s["worker"], s["deterministic"], s["generator"]) for s in sessions] == [
        ("0/2", False, "random-toy"), ("1/2", False, "random-toy"),
    ]  # fmt: skip
    # resumed without shards (the attribute form): a note again; a deterministic generator never gets one
    out2 = env / "runs2"
    assert main(_args(out2, RANDOM_TOY, "--generator-args", "declare=attribute")) == 0
    assert _notes(capsys.readouterr().out) == []  # one uninterrupted process: nothing mixed
    run2 = only_run_dir(out2)
    for png in sorted((run2 / "images" / "cfg-2").glob("*.png"))[:3]:
        png.unlink()
    assert main(_args(out2, RANDOM_TOY, "--generator-args", "declare=attribute")) == 0
    notes = _notes(capsys.readouterr().out)
    assert len(notes) == 1 and "of this process and of earlier runs" in notes[0], notes
    out3 = env / "runs3"
    assert main(_args(out3, TOY, "--shard", "0/2")) == 0 and main(_args(out3, TOY, "--shard", "1/2")) == 0
    assert _notes(capsys.readouterr().out) == []
    sessions = json.loads((only_run_dir(out3) / "provenance.json").read_text())["sampling_sessions"]
    assert [s["deterministic"] for s in sessions] == [True, True]


def test_a_run_samples_every_image_at_its_first_sessions_thread_count(env: Path, monkeypatch, capsys) -> None:
    """CPU kernels round differently at other thread counts, so a run pins its sampling threads: a resume or a
    later shard takes over the first session's count from the load-based choice and OMP_NUM_THREADS, and an
    explicit other --threads is refused while images are left to sample."""
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):  # the CLI writes them
        monkeypatch.setenv(var, "1")
    out = env / "runs"
    assert main(_args(out, TOY, "--shard", "0/2", "--threads", "1")) == 0
    assert _notes(capsys.readouterr().out) == []
    run = only_run_dir(out)
    # another explicit count, with images left: refused before any image, nothing written for shard 1
    assert main(_args(out, TOY, "--shard", "1/2", "--threads", "2")) != 0
    err = capsys.readouterr().err
    assert "its images were sampled with 1 CPU threads and --threads 2 would sample the rest" in err, err
    assert "use --threads 1 (or leave it out), or another --out" in err
    assert len(list((run / "images" / "cfg-2").glob("*.png"))) == 4
    # OMP_NUM_THREADS=3 from the environment (3: the CLI itself last wrote 2): the run's count wins, with a note
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert main(_args(out, TOY, "--shard", "1/2")) == 0
    printed = capsys.readouterr().out
    assert "sampling with 1 CPU threads, the count of this run's first sampling session, not 3" in printed
    assert _notes(printed) == []  # no mixed counts to report
    sessions = json.loads((run / "provenance.json").read_text())["sampling_sessions"]
    assert [(s["worker"], s["threads"], s["device"]) for s in sessions] == [
        ("0/2", 1, "cpu"),
        ("1/2", 1, "cpu"),
    ]
    assert sorted(p.name for p in (run / "sessions").iterdir()) == [
        "worker-0-of-2.json",
        "worker-1-of-2.json",
    ]
    # every image present: another --threads only changes the metric stage's speed, so it is accepted
    assert main(_args(out, TOY, "--shard", "1/2", "--threads", "2")) == 0


def test_a_library_caller_at_another_thread_count_gets_a_note(env: Path, capsys) -> None:
    """Without the CLI's stage threads (a library caller's own torch count) nothing is pinned: the mixed
    counts get the recorded note instead."""
    import torch

    from glidebench.runner.rundir import pin_sampling_threads, record_sampling_session
    from glidebench.runner.threads import StageThreads

    out = env / "runs"
    assert main(_args(out, TOY, "--shard", "0/2", "--threads", "1")) == 0
    run = only_run_dir(out)
    assert pin_sampling_threads(run, "cpu", None) == (None, None)
    cuda = StageThreads(2, 1, "--threads, every stage")
    assert pin_sampling_threads(run, "cuda", cuda) == (
        cuda,
        None,
    )  # GPU kernels: CPU threads do not round
    spec = json.loads((run / "spec.json").read_text())
    from glidebench.spec import RunSpec, Worker

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (note,) = [
            n
            for n in record_sampling_session(
                run, RunSpec.from_dict(spec), Worker(1, 2), ToyGenerator(), "cpu"
            )
            if "CPU threads" in n
        ]
    finally:
        torch.set_num_threads(before)
    assert "sampled with 1 CPU threads, this process samples with 2" in note


def _repaint(path: Path, value: int) -> bytes:
    old = path.read_bytes()
    a = np.asarray(Image.open(path).convert("RGB")).copy()
    a[0, 0] = value
    Image.fromarray(a).save(path)
    return old


def test_a_changed_reference_set_never_overwrites_a_finished_runs_results(env: Path, capsys) -> None:
    root = make_coco(env / "coco")
    out = env / "runs"
    args = _args(out, TOY, "--coco-root", str(root), "--limit", "4", "--reference-size", "0")
    assert main(args) == 0
    run = only_run_dir(out)
    assert main(args) == 0  # the same references: measured again, the same numbers
    results = (run / "results.csv").read_bytes()
    victim = sorted((root / "val2014").iterdir())[3]
    original = _repaint(victim, 7)  # same name and size, other bytes
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("glidebench: error: ") and "\n" not in err and "Traceback" not in err
    assert f"{run} holds results measured against other reference images" in err
    assert (
        "reference fingerprint" in err and "Restore the reference images, or move the finished results" in err
    )
    assert (run / "results.csv").read_bytes() == results
    prov = json.loads((run / "provenance.json").read_text())
    assert len(prov["data"]["reference_fingerprint"]) == 64
    # a run finished before the fingerprint was recorded: its reference features' name tells
    del prov["data"]["reference_fingerprint"]
    (run / "provenance.json").write_text(json.dumps(prov))
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "holds results measured against the reference features " in err and "\n" not in err.strip()
    assert "a reference image changed since (same names, other bytes), or the run's Inception did" in err
    victim.write_bytes(original)  # restored: measured again
    assert main(args) == 0 and (run / "results.csv").read_bytes() == results
