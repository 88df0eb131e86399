"""CPU threads per stage of a run: which count each stage gets, and setting it between stages.

Owns the policy measured in docs/performance.md ("Threads", ``benchmarks/bench_threads.py``): sampling and
feature extraction (convolutions and GEMMs) on the CPUs that the 1-minute load average leaves free, at most
one per physical core; the metric stage (float64 LAPACK at d = 2048) on one thread, except its pass over
pairwise tiles (float64 matrix products, ``glidebench.metrics.pairs``), which takes the CPUs free when each
setting's pass starts (:func:`pairwise_threads`: runnable tasks sampled then, not the lagging load average);
``--threads N`` (or ``OMP_NUM_THREADS`` from the environment, as torchrun sets it) on every stage. The CLI chooses
(:func:`stage_threads`), the runner applies (:func:`use_threads`) and its log line says what was chosen and
why. Images and numbers do not depend on any of it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

# The metric stage's threads unless --threads or OMP_NUM_THREADS say otherwise.
METRIC_THREADS = 1


@dataclass(frozen=True)
class StageThreads:
    """CPU threads of each stage of a run and why: ``sampling`` for generation and feature extraction,
    ``metrics`` for the metric stage."""

    sampling: int
    metrics: int
    reason: str
    pairwise: int | None = None  # the metric stage's pairwise products; None: the CPUs free at each pass
    cap: int = 1  # at most this many threads when chosen from the free CPUs (one per physical core)

    def __post_init__(self) -> None:
        if self.sampling < 1 or self.metrics < 1 or (self.pairwise is not None and self.pairwise < 1):
            raise ValueError(f"thread counts must be >= 1, got {self}")

    def describe(self) -> str:
        note = (
            ""
            if _threadpoolctl()
            else "; numpy's BLAS keeps its start-up count: install threadpoolctl to set it"
        )
        pairwise = (
            f", pairwise products {self.pairwise}"
            if self.pairwise is not None
            else f", pairwise products the CPUs free at each setting (at most {self.cap})"
        )
        return (
            f"threads: sampling and features {self.sampling}, metrics {self.metrics}{pairwise} ({self.reason})"
            f"{note}"
        )


def stage_threads(
    threads: int | None, env_threads: int | None, default: int, cpus: int, load1: float | None
) -> StageThreads:
    """The threads of each stage. ``threads`` (``--threads``), else ``env_threads`` (``OMP_NUM_THREADS`` as the
    user's environment set it), applies to every stage. Otherwise sampling and features take one thread per
    CPU that the load average ``load1`` leaves free (``cpus - load1``, rounded), at least 1 and at most
    ``default`` (torch's: one per physical core): on the 2-core machine under load two threads sampled 2.2x
    slower than one, and idle 1.6x faster. The metric stage takes METRIC_THREADS: its float64 eigenvalue
    routines ran 3-10x slower at two threads than at one under load."""
    if threads is not None:
        return StageThreads(threads, threads, "--threads, every stage", threads, threads)
    if env_threads is not None:
        return StageThreads(
            env_threads, env_threads, "OMP_NUM_THREADS, every stage", env_threads, env_threads
        )
    metrics = min(default, METRIC_THREADS)
    if load1 is None:
        return StageThreads(default, metrics, "no load average here", cap=default)
    free = cpus - load1
    sampling = max(1, min(default, int(free + 0.5)))
    return StageThreads(
        sampling,
        metrics,
        f"1-minute load average {load1:.2f} on {cpus} CPUs leaves {max(free, 0.0):.1f} free",
        cap=default,
    )


def pairwise_threads(threads: StageThreads | None, busy: float | None = None) -> int | None:
    """Threads of one setting's pass over pairwise tiles: ``threads.pairwise`` when --threads or
    OMP_NUM_THREADS fixed it, else one per CPU that ``busy`` (other runnable tasks now: :func:`runnable`)
    leaves free, at least 1 and at most ``threads.cap``. Two threads ran the pass 1.8x faster than one on
    the idle 2-core machine and 1.4x slower at a load of 3-6 (docs/performance.md, "Threads"). None (a library caller's count is left as it is) when ``threads`` is None."""
    if threads is None:
        return None
    if threads.pairwise is not None:
        return threads.pairwise
    if busy is None:
        busy = runnable()
    if busy is None:
        return threads.metrics
    return max(1, min(threads.cap, int(cpus() - busy + 0.5)))


def runnable(samples: int = 5, interval: float = 0.05) -> float | None:
    """Runnable tasks other than this process's thread, averaged over ``samples`` reads of
    ``/proc/loadavg`` (its fourth field counts the tasks running now, this one included); None where there
    is no such file. Unlike the 1-minute load average, it does not remember a burst that has ended."""

    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(interval)
    return sum(counts) / len(counts)


def cpus() -> int:
    """CPUs this process may run on (its affinity mask; the load average's denominator)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load1() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _threadpoolctl() -> bool:
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def use_threads(threads: StageThreads | None, stage: str) -> None:
    """Set the threads of ``stage`` ("sampling" or "metrics"): torch's, and numpy's BLAS pools when
    threadpoolctl is installed (without it numpy's OpenBLAS keeps the count it read when it loaded, which the
    CLI cannot change: torch, imported first, loads numpy). None leaves every count as it is."""
    if threads is None:
        return

    n = getattr(threads, stage)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if _threadpoolctl():
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")  # applies now, process-wide
