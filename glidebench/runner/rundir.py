"""The run directory and the processes that share it: distributed context, log, spec files, missing counts.

Owns the run-directory contract's first files (``spec.json``, ``prompts.json``, ``settings.json``: written
once, then checked on every resume so that a directory never mixes two runs), the count of images still
missing per setting (optionally in one worker's chunks), the torch.distributed context (gloo, barriers only)
and the run log (rank-prefixed lines; ``main`` lines from rank 0 only).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..data.sources import Prompt
from ..provenance import now_iso
from ..spec import RunSpec, Worker
from ..store import ImageStore, atomic_write_json, ensure_under, file_mode, read_json, to_json
from .generate import chunk_bounds, owned_chunks


class RunDirError(RuntimeError):
    """A run directory that holds another run's files."""


class IncompleteRun(RuntimeError):
    """--merge found images missing."""


@dataclass
class Dist:
    """The torch.distributed context of a torchrun job (rank/world from the environment)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised: bool = False

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        d = cls(rank, world, local)
        if world > 1:
            if not dist.is_initialized():
                # gloo: barriers only (works for CPU and GPU ranks); long timeout because ranks may finish
                # generation hours apart.
                dist.init_process_group(
                    "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(hours=72)
                )
            d.initialised = True
        return d

    def barrier(self) -> None:
        if self.initialised:
            dist.barrier()

    def close(self) -> None:
        if self.initialised:
            dist.destroy_process_group()
            self.initialised = False


class RunLog:
    """Progress lines of a run: ``log(msg)`` from every rank (prefixed under torchrun, silent with --quiet),
    ``log.main(msg)`` from rank 0 only (always shown)."""

    def __init__(self, rank: int, world: int, quiet: bool) -> None:
        self.rank, self.world, self.quiet = rank, world, quiet

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        prefix = f"[rank {self.rank}] " if self.world > 1 else ""
        print(prefix + msg, flush=True)

    def main(self, msg: str) -> None:
        if self.rank == 0:
            print(msg, flush=True)


def _write_or_check(path: Path, obj: Any) -> None:
    want = json.loads(to_json(obj))
    if path.exists():
        have = read_json(path)
        if have != want:
            raise RunDirError(
                f"{path} was written by a different run (its content differs from this run's). Remove the "
                f"directory {path.parent} or choose another --out"
            )
        return
    atomic_write_json(path, obj)


def init_run_dir(run_dir: Path, spec: RunSpec, prompts: list[Prompt]) -> None:
    """Write the run's spec, prompts and settings, or check that the directory holds this run's. The directory
    must be one plain name under its suite's folder (``spec.run_dir``: a generator's name cannot move it)."""
    ensure_under(run_dir.parent, run_dir)  # not "..", not the root
    run_dir.mkdir(parents=True, exist_ok=True)
    for s in spec.settings:
        ImageStore.of(run_dir, s.setting_id)  # refuses a setting id that leaves images/
    _write_or_check(run_dir / "spec.json", spec.record())
    _write_or_check(run_dir / "prompts.json", [p.to_dict() for p in prompts])
    _write_or_check(run_dir / "settings.json", {s.setting_id: spec.setting_record(s) for s in spec.settings})


def missing_counts(run_dir: Path, spec: RunSpec, worker: Worker | None = None) -> dict[str, int]:
    """Missing images per setting (only in ``worker``'s chunks when given)."""
    chunks = chunk_bounds(spec.total_samples, spec.batch_size)
    ks = owned_chunks(len(chunks), worker) if worker is not None else range(len(chunks))
    out = {}
    for s in spec.settings:
        store = ImageStore.of(run_dir, s.setting_id)
        out[s.setting_id] = sum(len(store.missing(range(*chunks[k]))) for k in ks)
    return out


class RunLocked(RunDirError):
    """Another live process is running the same worker of the same run."""


class RunLock:
    """An exclusive lock on one worker's share of a run: ``RUN_DIR/locks/worker-<i>-of-<n>.lock``.

    POSIX record locks (``fcntl.lockf``, which also works on NFS) are released by the kernel when their process
    dies, so a lock left by a killed process is taken over by the next run; the file records the holder (pid,
    host, start time) for the message a second process gets. Shards and torchrun ranks are different workers
    and never wait for each other.
    """

    def __init__(self, run_dir: Path, worker: Worker) -> None:
        self.path = run_dir / "locks" / f"worker-{worker.index}-of-{worker.count}.lock"
        self.worker = worker
        self.fd: int | None = None
        self.previous = ""  # the holder recorded by an earlier (finished or killed) process

    def __enter__(self) -> RunLock:

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(
                f"another process is already running this run (worker {self.worker.index}/{self.worker.count}) in "
                f"{self.path.parents[1]}: {holder}. Wait for it to finish or stop it, then run the same command "
                "again (its images are kept); a lock left by a killed process is taken over by the next run"
            ) from None
        self.previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:

        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# -- sampling sessions: who sampled the images, with how many threads, from which kind of generator --------------
def _sessions_dir(run_dir: Path) -> Path:
    return run_dir / "sessions"


def sampling_sessions(run_dir: Path) -> list[dict[str, Any]]:
    """Every sampling session of a run, all workers', oldest first (provenance.json's ``sampling_sessions``)."""
    out: list[dict[str, Any]] = []
    for path in sorted(_sessions_dir(run_dir).glob("worker-*.json")):
        try:
            records = read_json(path)
        except (OSError, ValueError):
            continue  # a record of a record: never a reason to stop a run
        if isinstance(records, list):
            out.extend(r for r in records if isinstance(r, dict))
    return sorted(out, key=lambda r: str(r.get("started", "")))


def record_sampling_session(
    run_dir: Path, spec: RunSpec, worker: Worker, generator: Any, device: str
) -> list[str]:
    """Record this process's sampling session (``RUN_DIR/sessions/worker-<i>-of-<n>.json``: start, worker, device,
    CPU threads, generator, whether it declares itself deterministic) and return the notes a resume or a shard
    needs: a generator that declares ``deterministic=False`` (its images then come from several unrelated
    sampling sessions), and CPU thread counts other than the earlier sessions' (CPU kernels round differently
    at other counts, so images are bit-identical only at equal thread counts). Call it under the worker's lock."""

    from ..generators.plugins import declares_deterministic

    earlier = sampling_sessions(run_dir)
    threads = torch.get_num_threads()
    deterministic = declares_deterministic(generator)
    name = str(getattr(generator, "name", "?"))
    session = {
        "started": now_iso(), "worker": f"{worker.index}/{worker.count}", "device": device, "threads": threads,
        "generator": name, "deterministic": deterministic,
    }  # fmt: skip
    path = _sessions_dir(run_dir) / f"worker-{worker.index}-of-{worker.count}.json"
    mine = [r for r in earlier if r.get("worker") == session["worker"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, [*mine, session])
    notes = []
    have = spec.total_samples * len(spec.settings) - sum(missing_counts(run_dir, spec).values())
    if not deterministic and (have or worker.count > 1):
        by = "the other workers" if worker.count > 1 else "earlier runs"
        notes.append(
            f"generator {name} declares deterministic=False: its images do not follow from (caption, seed, setting) "
            f"alone, so this run mixes images of this process and of {by}, and no rerun reproduces them "
            "(recorded in provenance.json's sampling_sessions)"
        )
    cpu = [r.get("threads") for r in earlier if r.get("device") == device == "cpu"]
    other = sorted({n for n in cpu if isinstance(n, int)} - {threads})
    if other and have:
        notes.append(
            f"the images already in this run were sampled with {'/'.join(map(str, other))} CPU threads, this "
            f"process samples with {threads}: CPU kernels round differently at other thread counts (a uint8 level "
            f"now and then), so images are bit-identical to an uninterrupted run only at equal counts; "
            f"--threads {other[0]} keeps them so (recorded in provenance.json's sampling_sessions)"
        )
    return notes


def pin_sampling_threads(run_dir: Path, device: str, threads: Any) -> tuple[Any, str | None]:
    """The sampling threads of a resumed or sharded CPU run: the count of its first sampling session, so that
    every image of one run directory is sampled at one count (CPU kernels round differently at other counts:
    docs/harness.md). ``threads`` is the CLI's :class:`~glidebench.runner.threads.StageThreads` (None: a library
    caller's count, left as it is). Returns the threads to use and a note when the count was taken over; an
    explicit ``--threads`` that differs is refused. Call it only when images are left to sample (before any work)."""
    if device != "cpu" or threads is None:
        return threads, None
    first = next(
        (r["threads"] for r in sampling_sessions(run_dir)
         if r.get("device") == "cpu" and isinstance(r.get("threads"), int) and r["threads"] >= 1),
        None,
    )  # fmt: skip
    if first is None or first == threads.sampling:
        return threads, None
    if threads.reason.startswith("--threads"):
        raise RunDirError(
            f"{run_dir}: its images were sampled with {first} CPU threads and --threads {threads.sampling} would sample "
            f"the rest with other rounding; use --threads {first} (or leave it out), or another --out for a new run"
        )

    note = (
        f"sampling with {first} CPU threads, the count of this run's first sampling session, not {threads.sampling} "
        f"({threads.reason}): images of one run are sampled at one count"
    )
    return replace(threads, sampling=first), note


def check_reference_set(run_dir: Path, source: Any, resolution: int, stats: Any = None) -> None:
    """Refuse to measure a finished run again against another reference set under the same fingerprint (the
    spec names the data and its size, not each reference image's bytes), before any work. Records the current
    reference fingerprint in the data record (provenance.json's ``data.reference_fingerprint``)."""
    if stats is not None:
        return  # a statistics file: its SHA-256 is in the spec
    current = source.reference_fingerprint(resolution)
    source.record["reference_fingerprint"] = current
    prov_path = run_dir / "provenance.json"
    if not (run_dir / "results.csv").is_file() or not prov_path.is_file():
        return
    try:
        prov = read_json(prov_path)
    except (OSError, ValueError):
        return
    recorded = (prov.get("data") or {}).get("reference_fingerprint")
    fix = (
        f"Restore the reference images, or move the finished results (results.*, provenance.json) out of {run_dir} "
        "to measure against the current ones"
    )
    if recorded is None:  # written before the record: the name of its cached reference features tells
        fx = prov.get("feature_extractor") or {}
        name, fingerprint = (fx.get("files") or {}).get("reference"), fx.get("inception_fingerprint")
        if not (isinstance(name, str) and isinstance(fingerprint, str)):
            return
        key = hashlib.sha256(f"{fingerprint}\n{current}".encode()).hexdigest()[:24]
        if name.endswith(f"-{key}.npz"):
            return
        raise RunDirError(
            f"{run_dir} holds results measured against the reference features {name}, which these reference "
            "images do not give: a reference image changed since (same names, other bytes), or the run's "
            f"Inception did. {fix}"
        )
    if recorded != current:
        raise RunDirError(
            f"{run_dir} holds results measured against other reference images (reference fingerprint "
            f"{str(recorded)[:16]}, now {current[:16]}): a reference image changed since (same names, other "
            f"bytes). {fix}"
        )
