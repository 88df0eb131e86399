"""Progress of a run: one overall bar with an ETA on a terminal, a heartbeat line when output is not one.

Owns what a run says while it works, between its first lines and its results:

- **the work**: one stage per unit of waiting, declared once the run directory exists (:func:`plan_work`):
  generation per setting (the images still to sample, counted by whole chunks), the reference set's features,
  each setting's features per extractor (Inception, evaluator CLIP), the metrics of each setting and their
  intervals. The stages advance as the run's stages report (images written, feature batches embedded, a
  setting measured); a feature file found in the cache counts as done at once.
- **the ETA**: remaining units x seconds per unit, per kind of work (generation, features, metrics,
  intervals): measured in this run once a kind has done any work, else a rough prior (:data:`PRIORS`,
  the 2-core CPU's and an H200's order of magnitude); generation has no prior, so the ETA reads "?" until the
  first chunk is timed. The overall fraction is elapsed / (elapsed + ETA).
- **where it goes**: standard error. On a terminal (or with ``--progress``) one tqdm bar, redrawn every second
  below the run's log lines; otherwise a heartbeat line every :data:`HEARTBEAT_S` seconds, so that a long
  stage (reference features, the metric stage at the paper's scale) never looks hung. ``--quiet`` silences
  both; only rank 0 of a torchrun job shows them.

:class:`Progress` is the run's log (a :class:`~glidebench.runner.rundir.RunLog` whose lines are printed
above the bar); stages reach it through :func:`progress_of`, which gives a no-op for a plain log.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from tqdm import tqdm

from ..store import ImageStore
from .rundir import RunLog

HEARTBEAT_S = 30.0  # seconds between heartbeat lines when standard error is not a terminal
REFRESH_S = 1.0  # seconds between redraws of the bar (its elapsed time and ETA move while a stage blocks)
# seconds per unit (an image; a setting's metrics count its images) before the run has timed that kind of work
PRIORS: dict[str, dict[str, float]] = {
    "features": {"cpu": 0.3, "cuda": 0.005},  # Inception at 299 px: 1.6-2.4 images/s on the loaded 2-core CPU
    "metrics": {"cpu": 0.02, "cuda": 0.02},  # point metrics of one setting, per image (docs/performance.md)
    "intervals": {"cpu": 0.02, "cuda": 0.02},  # jackknife / bootstrap of one setting, per image
}
KIND_WORDS = {
    "generate": "generating",
    "features": "features",
    "metrics": "measuring",
    "intervals": "measuring",
}


@dataclass
class Stage:
    """One unit of waiting: ``kind`` (generate, features, metrics, intervals), a label and its units."""

    kind: str
    label: str
    total: float
    done: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.kind} {self.label}"


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress(RunLog):
    """The run's log with an overall progress display (see the module docstring).

    ``mode``: ``bar`` (tqdm on ``stream``), ``heartbeat`` (a line every :data:`HEARTBEAT_S` s) or ``off``."""

    def __init__(
        self,
        log: RunLog,
        stages: Iterable[Stage],
        mode: str,
        device_type: str = "cpu",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(log.rank, log.world, log.quiet)
        self.stages = {s.key: s for s in stages}
        self.mode, self.device_type, self.clock = mode, device_type, clock
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = self.mark = clock()
        self.current = ""
        self._shown = 0.0  # the largest fraction displayed so far
        self.spent: dict[str, float] = {}  # kind -> seconds spent on work it did (cache hits excluded)
        self.units: dict[str, float] = {}  # kind -> units done in those seconds
        self.bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the log -------------------------------------------------------------------------------------------
    def __call__(self, msg: str) -> None:
        self._above_bar(super().__call__, msg)

    def main(self, msg: str) -> None:
        self._above_bar(super().main, msg)

    def _above_bar(self, write: Callable[[str], None], msg: str) -> None:
        if self.bar is None:
            write(msg)
            return

        with tqdm.external_write_mode(file=sys.stdout):
            write(msg)

    # --- the work ------------------------------------------------------------------------------------------
    def begin(self, kind: str, label: str, reset: bool = True) -> None:
        """Stage (``kind``, ``label``) starts now: it is what the display names; with ``reset``, the time
        before this call is charged to no stage."""
        with self._lock:
            if reset:
                self.mark = self.clock()
            stage = self.stages.get(f"{kind} {label}")
            self.current = self._describe(stage or Stage(kind, label, 0))

    def advance(self, kind: str, label: str, n: float = 1, cached: bool = False) -> None:
        """``n`` units of stage (``kind``, ``label``) are done (``cached``: found, not computed: not timed)."""
        with self._lock:
            now = self.clock()
            stage = self.stages.get(f"{kind} {label}")
            if stage is None:
                stage = self.stages.setdefault(f"{kind} {label}", Stage(kind, label, n))
            stage.done = min(stage.total, stage.done + n)
            if not cached:
                self.spent[kind] = self.spent.get(kind, 0.0) + (now - self.mark)
                self.units[kind] = self.units.get(kind, 0.0) + n
            self.mark = now
            self.current = self._describe(stage)
        self._show()

    def finish_stage(self, kind: str, label: str) -> None:
        """Stage (``kind``, ``label``) has nothing left (e.g. a feature file found in the cache)."""
        stage = self.stages.get(f"{kind} {label}")
        if stage is not None and stage.done < stage.total:
            self.advance(kind, label, stage.total - stage.done, cached=True)

    def counting(
        self, kind: str, label: str, batches: Callable[[], Iterable[Any]]
    ) -> Callable[[], Iterable[Any]]:
        """``batches`` (a callable giving batches of images) that advances the stage as each batch is used."""

        def run() -> Iterable[Any]:
            self.begin(kind, label)
            for b in batches():
                yield b  # resumed when the consumer asks for the next one: this one is done
                self.advance(kind, label, len(b))

        return run

    def _describe(self, stage: Stage) -> str:
        word = KIND_WORDS.get(stage.kind, stage.kind)
        if stage.kind in ("metrics", "intervals"):
            return f"{word} {stage.label}"
        return f"{word} {stage.label} {stage.done:.0f}/{stage.total:.0f}"

    def rate(self, kind: str) -> float | None:
        """Seconds per unit of ``kind``: measured in this run, else the prior (None: not known yet)."""
        if self.units.get(kind):
            return self.spent[kind] / self.units[kind]
        prior = PRIORS.get(kind)
        return None if prior is None else prior.get(self.device_type, prior["cpu"])

    def eta(self) -> float | None:
        """Seconds left (None while a kind with work left has no rate yet)."""
        left = 0.0
        for s in self.stages.values():
            remaining = s.total - s.done
            if remaining <= 0:
                continue
            r = self.rate(s.kind)
            if r is None:
                return None
            left += remaining * r
        return left

    def fraction(self) -> float:
        """The share of the run done: elapsed / (elapsed + ETA); by units while the ETA is unknown."""
        eta = self.eta()
        if eta is None:
            total = sum(s.total for s in self.stages.values())
            return sum(s.done for s in self.stages.values()) / total if total else 0.0
        elapsed = self.clock() - self.t0
        return 1.0 if elapsed + eta <= 0 else elapsed / (elapsed + eta)

    def shown_fraction(self) -> float:
        """:meth:`fraction` as displayed: it never goes back when a measured rate turns out slower than a
        prior (the ETA does say so)."""
        self._shown = max(self._shown, self.fraction())
        return self._shown

    def status(self) -> str:
        """One line: percentage, elapsed, ETA and the current stage."""
        eta = self.eta()
        return (
            f"glidebench: {100 * self.shown_fraction():.0f}% after {_clock_text(self.clock() - self.t0)}, ETA "
            f"{_clock_text(eta)}" + (f" ({self.current})" if self.current else "")
        )

    # --- the display ---------------------------------------------------------------------------------------
    def __enter__(self) -> Progress:
        if self.mode == "bar":
            self.bar = tqdm(
                total=1000, file=self.stream, dynamic_ncols=True, leave=True, mininterval=0,
                bar_format="glidebench {percentage:3.0f}%|{bar}| {elapsed} elapsed{postfix}",
            )  # fmt: skip
        if self.mode in ("bar", "heartbeat"):
            period = REFRESH_S if self.mode == "bar" else HEARTBEAT_S
            self._thread = threading.Thread(target=self._tick, args=(period,), daemon=True)
            self._thread.start()
        return self

    def _tick(self, period: float) -> None:
        while not self._stop.wait(period):
            if self.mode == "bar":
                self._show()
            else:
                print(self.status(), file=self.stream, flush=True)

    def _show(self) -> None:
        bar = self.bar
        if bar is None:
            return
        eta = self.eta()
        bar.n = int(1000 * self.shown_fraction())
        bar.set_postfix_str(f"ETA {_clock_text(eta)}" + (f", {self.current}" if self.current else ""), False)
        bar.refresh()

    def close(self) -> None:
        """Stop the display (the bar at 100 % when every stage finished)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.bar is not None:
            if all(s.done >= s.total for s in self.stages.values()):
                self.current = "done"
            self._show()
            self.bar.close()
            self.bar = None

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent:
    """What :func:`progress_of` gives for a plain log: every call does nothing."""

    def begin(self, *a: Any, **k: Any) -> None:
        pass

    def advance(self, *a: Any, **k: Any) -> None:
        pass

    def finish_stage(self, *a: Any, **k: Any) -> None:
        pass

    def counting(self, kind: str, label: str, batches: Any) -> Any:
        return batches


def progress_of(log: Any) -> Any:
    """The :class:`Progress` behind a run's log, or a no-op stand-in for a plain :class:`RunLog`."""
    return log if isinstance(log, Progress) else _Silent()


def display_mode(options: Any, rank: int, stream: TextIO | None = None) -> str:
    """``off`` with --quiet or on a rank other than 0, ``bar`` on a terminal or with --progress, else
    ``heartbeat``."""
    if options.quiet or rank != 0:
        return "off"
    stream = stream if stream is not None else sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    return "bar" if tty or options.progress else "heartbeat"


def plan_work(plan: Any, features: bool = True, metrics: bool = True) -> list[Stage]:
    """The stages of ``plan`` still to do from here (see the module docstring): generation counts the images of
    this worker's chunks that have a missing file (a chunk is sampled whole)."""
    from .generate import chunk_bounds, owned_chunks

    spec, stages = plan.spec, []
    chunks = chunk_bounds(spec.total_samples, spec.batch_size)
    mine = owned_chunks(len(chunks), plan.worker)
    for s in spec.settings:
        store = ImageStore.of(plan.run_dir, s.setting_id)
        todo = 0 if plan.options.merge else sum(hi - lo for lo, hi in (chunks[k] for k in mine)
                                                if store.missing(range(lo, hi)))  # fmt: skip
        if todo:
            stages.append(Stage("generate", s.setting_id, todo))
    if features:
        if plan.reference_stats is None:
            stages.append(Stage("features", "reference/inception", plan.source.reference_count))
        for s in spec.settings:
            for name in ("inception", "clip"):  # the clip stage is dropped when no evaluator CLIP loads
                stages.append(Stage("features", f"{s.setting_id}/{name}", spec.total_samples))
    if metrics and not plan.options.features_only:
        intervals = bool(spec.bootstrap_resamples) and plan.reference_stats is None
        for s in spec.settings:
            stages.append(Stage("metrics", s.setting_id, spec.num_samples))
            if intervals:
                stages.append(Stage("intervals", s.setting_id, spec.num_samples))
    return stages


def run_progress(plan: Any, log: RunLog, rank: int, stream: TextIO | None = None) -> Progress:
    """The progress display of ``plan`` (enter it to show it)."""
    mode = display_mode(plan.options, rank, stream)
    return Progress(
        log, plan_work(plan, features=rank == 0, metrics=rank == 0), mode, plan.device.type, stream
    )
