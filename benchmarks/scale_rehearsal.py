"""Benchmark (run by hand; a slow test runs it small): the real harness end to end at scale, with a trivial
generator.

    python benchmarks/scale_rehearsal.py [--images 10000] [--settings 1] [--references N]
        [--resume-images N] [--resume-through all|generation] [--kill-at 0.5] [--kill-delay 0.01]
        [--bootstrap-resamples R] [--threads T] [--progress] [--stand-in-inception]
        [--deadline-min M] [--workdir DIR] [--keep] [--json FILE]

Everything runs as a user would: the installed console script ``glidebench`` (the venv's), from a fresh
temporary directory (``--workdir``; removed afterwards unless ``--keep``) that holds a copy of the plug-in
``benchmarks/rehearsal_plugin.py`` (pattern images, no diffusion; each image depends only on its caption, seed
and scale). The run is

    glidebench run coco-fid --generator rehearsal_plugin:make --cfg SETTINGS --clip '' --num-samples N
        --samples-per-prompt 1 --reference-size R --out runs

with ``GLIDEBENCH_CACHE`` inside the directory, so the reference features are computed, not read from an
earlier cache. The references are the embedded set's ``test`` split enlarged to ``--references`` (default N)
scenes: the split is generated per index, so any size exists. When the console script cannot import the
plug-in from the current directory (probed with ``--dry-run``), the runs get ``PYTHONPATH=WORKDIR``
and the summary says so.

1. Resume (first, since it needs nothing of the main run): a run of ``--resume-images`` images (default N), in
   its own folder and cache, is killed with SIGKILL once ``--kill-at`` of its images exist (the plug-in sleeps
   ``--kill-delay`` s per image in that process only, through ``REHEARSAL_PLUGIN_DELAY``: no pixel and not the
   run's identity depends on it), then the same command runs again, through the report (``all``) or until its
   images are complete (``generation``: at 10k, where a second feature pass would double the cost).
2. The uninterrupted run. Stage times come from its log lines, each stamped as it arrives
   (``PYTHONUNBUFFERED``): a marker line (``MARKERS``: a setting's generation, each feature file, the
   reference features, a setting's metrics, the differences, the results files, the report) closes the stage
   since the previous one. Peak memory: ``/usr/bin/time -v``'s maximum RSS and the process tree's RSS polled
   twice a second (peak per stage). Then the run directory's files and sizes, and the reference feature cache.
3. Checks: the run finished with every image, the report and no temporary file; the killed process died
   inside generation; the resumed run finished; its images are byte-identical to the uninterrupted run's first
   ``--resume-images`` (same captions, seeds and chunks: ``num_samples`` only cuts the caption permutation
   shorter); at equal size and through the report, its results equal the uninterrupted run's.

``--deadline-min`` (or SIGTERM to this script) stops the run in progress and summarises what completed.
Prints a Markdown summary; ``--json FILE`` also writes the figures. Exit status 1 when a check fails or the
run was stopped.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).resolve().parent / "rehearsal_plugin.py"
TIME_BIN = Path("/usr/bin/time")
CHUNK = 50  # coco-fid's embedded profile's chunk (the rehearsal leaves --batch-size as it is)
DELAY_ENV = "REHEARSAL_PLUGIN_DELAY"  # seconds per image the plug-in sleeps (not part of its identity)
# the result columns a resumed run must reproduce
COMPARED = ("setting_id", "fid", "fid_lo", "fid_hi", "kid_mean", "precision", "recall", "clip_score")


# --stand-in-inception: the same CLI (glidebench.cli.main) with a cheap, deterministic 2048-d extractor in place
# of Inception (a fixed random projection of 32 px pixels, ReLU), so the metric stage's math runs at Inception's
# width and the run finishes where Inception alone would take hours; written into the working directory
STAND_IN = """\
import sys

import numpy as np
import torch

import glidebench.runner.stages as C


class StandInInception:
    name = "stand-in-2048"
    source = "stand-in"
    fingerprint = "stand-in:relu(randn(3072, 2048) x 32px / 55):seed0:v1"

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(3 * 32 * 32, 2048, generator=g) / 55.0

    def __call__(self, images):
        x = torch.nn.functional.interpolate(images.float() / 255.0, size=32, mode="area").flatten(1)
        return {"pool3": torch.relu((x - 0.5) @ self.w).numpy().astype(np.float32)}


C.make_inception = lambda source, device, **kwargs: StandInInception()
from glidebench.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
"""


def console_script() -> Path:
    """The installed ``glidebench`` next to this interpreter (the venv's), else the repository's ``.venv``."""
    for cand in (Path(sys.executable).parent / "glidebench", ROOT / ".venv" / "bin" / "glidebench"):
        if cand.exists():
            return cand
    raise SystemExit("no glidebench console script: pip install -e . into the venv first")


# ---------------------------------------------------------------------------------------------------------
# A run of the console script, watched: stamped log lines, the process tree's RSS, an optional kill
# ---------------------------------------------------------------------------------------------------------


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (from /proc; 0 once gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


# When the run in progress is stopped (``--deadline-min``, or SIGTERM to this script): time.monotonic() value
_DEADLINE = [float("inf")]


@dataclass
class Watched:
    """What one watched command gave."""

    rc: int
    seconds: float
    lines: list[tuple[float, str]]  # (seconds since start, line)
    rss: list[tuple[float, int]]  # (seconds since start, bytes of the process tree)
    killed: bool = False  # by kill_when / stop_on
    stopped: bool = False  # by the deadline
    time_v: dict[str, str] = field(default_factory=dict)  # /usr/bin/time -v fields

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    @property
    def peak_rss(self) -> int:
        return max((b for _, b in self.rss), default=0)


def watch(
    cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path, kill_when: Any = None, stop_on: str = "",
    echo: bool = True,
) -> Watched:  # fmt: skip
    """Run ``cmd`` (under ``/usr/bin/time -v`` when it is not to be killed) and stamp its output lines; SIGKILL
    its process group when ``kill_when()`` turns true (polled every 50 ms), when a line matches ``stop_on``, or
    at the deadline."""
    time_file = log_path.with_suffix(".time")
    use_time = TIME_BIN.exists() and kill_when is None and not stop_on
    full = [str(TIME_BIN), "-v", "-o", str(time_file), *cmd] if use_time else cmd
    t0 = time.monotonic()
    proc = subprocess.Popen(
        full, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        start_new_session=True,
    )  # fmt: skip
    lines: list[tuple[float, str]] = []
    rss: list[tuple[float, int]] = []
    killed, stopped, done = threading.Event(), threading.Event(), threading.Event()

    def kill(why: threading.Event) -> None:
        if not (killed.is_set() or stopped.is_set()):
            why.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def poll() -> None:
        while not done.is_set():
            rss.append((time.monotonic() - t0, _tree_rss(proc.pid)))
            if kill_when is not None and kill_when():
                kill(killed)
            if time.monotonic() > _DEADLINE[0]:
                kill(stopped)
            done.wait(0.05 if kill_when is not None else 0.5)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stop_rx = re.compile(stop_on) if stop_on else None
    try:
        with open(log_path, "w") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                t = time.monotonic() - t0
                line = line.rstrip("\n")
                lines.append((t, line))
                log.write(f"[{t:8.1f}] {line}\n")
                log.flush()
                if echo:
                    print(f"    [{t:7.1f}s] {line}", flush=True)
                if stop_rx is not None and stop_rx.search(line):
                    kill(killed)
        rc = proc.wait()
    finally:  # this script interrupted: never leave the run behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        done.set()
        poller.join()
    fields: dict[str, str] = {}
    if use_time and time_file.exists():
        for line in time_file.read_text().splitlines():
            key, sep, value = line.strip().rpartition(": ")
            if sep:
                fields[key] = value
    return Watched(rc, time.monotonic() - t0, lines, rss, killed.is_set(), stopped.is_set(), fields)


# ---------------------------------------------------------------------------------------------------------
# Reading a finished run back
# ---------------------------------------------------------------------------------------------------------


def only_run_dir(out: Path) -> Path:
    dirs = [p for p in (out / "coco-fid").iterdir() if p.is_dir()] if (out / "coco-fid").is_dir() else []
    if len(dirs) != 1:
        raise RuntimeError(f"expected one run directory under {out / 'coco-fid'}, found {dirs}")
    return dirs[0]


def count_pngs(out: Path) -> int:
    return sum(1 for _ in out.glob("coco-fid/*/images/*/*.png"))


def image_hashes(run_dir: Path, n: int) -> dict[str, list[str]]:
    """Setting id -> SHA-256 of images 0..n-1 (missing: '')."""
    out = {}
    for d in sorted((run_dir / "images").iterdir()):
        out[d.name] = [
            hashlib.sha256(p.read_bytes()).hexdigest() if (p := d / f"{i:06d}.png").exists() else ""
            for i in range(n)
        ]
    return out


def read_results(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def tree_sizes(root: Path, depth: int = 2) -> list[tuple[str, int, int]]:
    """(relative folder or file up to ``depth`` levels, files, bytes), folders summed."""
    rows: dict[str, list[int]] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root)
        key = str(Path(*rel.parts[:depth])) + ("/" if len(rel.parts) > depth else "")
        r = rows.setdefault(key, [0, 0])
        r[0] += 1
        r[1] += p.stat().st_size
    return [(k, v[0], v[1]) for k, v in rows.items()]


def timing_seconds(run_dir: Path) -> dict[str, tuple[int, float]]:
    """Setting id -> (chunks timed, summed sampling seconds) from timing/<setting>/chunk_*.json."""
    out = {}
    for d in sorted((run_dir / "timing").iterdir()) if (run_dir / "timing").is_dir() else []:
        recs = [json.loads(p.read_text()) for p in sorted(d.glob("chunk_*.json"))]
        out[d.name] = (len(recs), sum(float(r["seconds"]) for r in recs))
    return out


# ---------------------------------------------------------------------------------------------------------
# Stages from the log
# ---------------------------------------------------------------------------------------------------------


# (pattern, stage name) of the log lines that close a stage; the time since the previous such line is that stage's
MARKERS = (
    (r"^\[(?P<s>[^\]]+)\] generation:", "generation {s}"),
    (r"^\s*features (?P<s>\S+): .*\((?P<x>[^,]+), [\d.]+ s\)", "features {s} ({x})"),
    (r"^\s*reference features:", "reference features (Inception)"),
    (r"^\s*\[(?P<s>[^\]]+)\] FID", "metrics {s} (point, attributes, intervals)"),
    (r"^\s*intervals and diversity:", "paired differences"),
    (r"^results: ", "provenance and results files"),
    (r"^report: ", "report"),
)


def stages(w: Watched) -> list[tuple[str, float, float]]:
    """(stage, start, end) in seconds since the command started: the start-up up to the first log line, then
    each marker line (``MARKERS``) closes the stage since the previous marker; a stopped run's last stage is
    the one it was in."""
    rx = [(re.compile(p), name) for p, name in MARKERS]
    out: list[tuple[str, float, float]] = []
    if not w.lines:
        return [("start-up", 0.0, w.seconds)]
    prev = w.lines[0][0]
    out.append(("start-up (imports, plan, run dir)", 0.0, prev))
    for t, line in w.lines:
        for r, name in rx:
            m = r.search(line)
            if m:
                out.append((name.format(**m.groupdict()), prev, t))
                prev = t
                break
    if w.stopped:
        out.append(("STOPPED in the stage after this (unfinished)", prev, w.seconds))
    else:
        out.append(("exit", prev, w.seconds))
    return out


def peak_between(w: Watched, lo: float, hi: float) -> int:
    return max((b for t, b in w.rss if lo <= t <= hi + 0.5), default=0)


# ---------------------------------------------------------------------------------------------------------
# The rehearsal
# ---------------------------------------------------------------------------------------------------------


def run_args(args: argparse.Namespace, n: int, out: str) -> list[str]:
    cmd = [
        "run", "coco-fid", "--generator", "rehearsal_plugin:make", "--cfg", args.settings, "--clip", "",
        "--num-samples", str(n), "--samples-per-prompt", "1", "--reference-size", str(args.references or args.images),
        "--out", out,
    ]  # fmt: skip
    if args.bootstrap_resamples is not None:
        cmd += ["--bootstrap-resamples", str(args.bootstrap_resamples)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.progress:
        cmd += ["--progress"]
    return cmd


def fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return str(b)


def fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s:.1f} s ({s / 60:.1f} min)"


def _plugin_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env |= {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop(DELAY_ENV, None)
    return env


def _quoted(cmd: list[str]) -> str:
    return " ".join(a if a else "''" for a in cmd)


def resume_check(
    args: argparse.Namespace, work: Path, launcher: list[str], env: dict[str, str], fig: dict
) -> Path | None:
    """A run killed with SIGKILL during generation, then the same command again (through generation only, or
    through the report with a cache of its own). Returns its run directory."""
    r = fig["resume_images"]
    out = work / "resume" / "runs"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = env | {"GLIDEBENCH_CACHE": str(work / "resume" / "cache")}
    # run from WORKDIR, where the plug-in is, as a user would; the runs go to WORKDIR/resume/runs
    cmd = [*launcher, *run_args(args, r, str(out))]
    n_settings = len([x for x in args.settings.split(",") if x.strip()])
    # not on a chunk boundary, so that the kill lands inside a chunk's writes
    total = r * n_settings
    target = int(args.kill_at * total) + (CHUNK // 2 if total >= 4 * CHUNK else 0)
    target = max(1, min(total - 1, target))
    print(f"## resume: {r} images, SIGKILL once {target} images exist, then the same command", flush=True)
    k = watch(
        cmd, work, env | {DELAY_ENV: str(args.kill_delay)}, work / "resume-killed.log",
        kill_when=lambda: count_pngs(out) >= target,
    )  # fmt: skip
    fig["resume_killed"] = k.killed
    fig["resume_images_at_kill"] = count_pngs(out) if out.exists() else 0
    fig["resume_tmp_left_by_kill"] = len(list(out.rglob("*.tmp"))) if out.exists() else 0
    stop_on = ""
    if args.resume_through == "generation" and (out / "coco-fid").is_dir():
        last = list(json.loads((only_run_dir(out) / "settings.json").read_text()))[-1]
        stop_on = rf"^\[{re.escape(last)}\] generation:"
    w = watch(cmd, work, env, work / "resume.log", stop_on=stop_on)
    fig["resume_rc"] = w.rc
    fig["resume_s"] = w.seconds
    fig["resume_stopped"] = w.stopped
    fig["resume_log_lines"] = [ln for _, ln in w.lines if re.search(r"generation:|timing covers|lock of", ln)]
    if not (out / "coco-fid").is_dir():
        return None
    return only_run_dir(out)


def rehearse(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    exe = console_script()
    shutil.copy2(PLUGIN, work / PLUGIN.name)
    env = _plugin_env(work)
    fig: dict[str, Any] = {"images": args.images, "settings": args.settings, "workdir": str(work)}
    fig["references"] = args.references or args.images
    fig["resume_images"] = min(args.resume_images, args.images)
    checks: dict[str, bool] = {}
    fig["checks"] = checks

    # 0. can the console script import the plug-in from the current directory?
    probe = subprocess.run(
        [str(exe), "run", "coco-fid", "--generator", "rehearsal_plugin:make", "--dry-run", "--quiet"],
        cwd=work, env=env, capture_output=True, text=True,
    )  # fmt: skip
    fig["pythonpath_needed"] = probe.returncode != 0
    if probe.returncode != 0:
        fig["import_error"] = (probe.stdout + probe.stderr).strip().splitlines()[-1:]
        env["PYTHONPATH"] = str(work)
        print(f"  the console script cannot import the plug-in from its directory: {fig['import_error']}; using "
              "PYTHONPATH=WORKDIR", flush=True)  # fmt: skip

    launcher, shown = [str(exe)], "glidebench"
    if args.stand_in_inception:
        (work / "glidebench_standin.py").write_text(STAND_IN)
        launcher, shown = (
            [str(exe.parent / "python"), str(work / "glidebench_standin.py")],
            "python glidebench_standin.py",
        )
    fig["launcher"] = shown

    # 1. resume: killed during generation, then the same command (first: it needs no figure of the main run)
    rd_resume = resume_check(args, work, launcher, env, fig) if fig["resume_images"] else None

    # 2. the uninterrupted run, as a user types it, with a fresh feature cache
    env_main = env | {"GLIDEBENCH_CACHE": str(work / "cache")}
    cmd = [*launcher, *run_args(args, args.images, "runs")]
    fig["command"] = (
        "cd WORKDIR && " + ("PYTHONPATH=WORKDIR " if fig["pythonpath_needed"] else "")
        + "GLIDEBENCH_CACHE=WORKDIR/cache " + _quoted([shown, *cmd[len(launcher) :]])
    )  # fmt: skip
    print(f"## run: {args.images} images x settings cfg {args.settings}\n  {fig['command']}", flush=True)
    w = watch(cmd, work, env_main, work / "run.log")
    fig["rc"], fig["stopped"], fig["total_s"] = w.rc, w.stopped, w.seconds
    run_dir = only_run_dir(work / "runs") if (work / "runs" / "coco-fid").is_dir() else None
    finished = w.rc == 0 and run_dir is not None and (run_dir / "results.csv").exists()
    checks["run finished (exit 0, results.csv)"] = finished
    fig["stages"] = [
        {"stage": name, "seconds": hi - lo, "peak_rss": peak_between(w, lo, hi)} for name, lo, hi in stages(w)
    ]
    fig["peak_rss_polled"] = w.peak_rss
    if w.time_v:
        fig["max_rss_time_v"] = int(w.time_v.get("Maximum resident set size (kbytes)", "0")) * 1024
        fig["cpu_user_s"] = float(w.time_v.get("User time (seconds)", "nan"))
        fig["cpu_system_s"] = float(w.time_v.get("System time (seconds)", "nan"))
    if not finished and not w.stopped:
        fig["tail"] = [ln for _, ln in w.lines[-30:]]
    if w.stopped:
        bars = [(t, ln) for t, ln in w.lines if "%|" in ln]
        fig["last_progress"] = f"{bars[-1][1].strip()} (at {bars[-1][0]:.0f} s)" if bars else None
    if run_dir is None:
        return fig
    setting_ids = list(json.loads((run_dir / "settings.json").read_text()))
    fig["run_dir"] = str(run_dir.relative_to(work))
    fig["chunk_seconds"] = {k: v[1] for k, v in timing_seconds(run_dir).items()}
    fig["files"] = tree_sizes(run_dir)
    fig["run_dir_bytes"] = sum(b for _, _, b in fig["files"])
    fig["cache_files"] = tree_sizes(work / "cache", depth=3) if (work / "cache").exists() else []
    checks["every image present"] = all(
        len(list((run_dir / "images" / s).glob("*.png"))) == args.images for s in setting_ids
    )
    checks["no temporary file left"] = not any(run_dir.rglob("*.tmp"))
    if finished:
        fig["results"] = read_results(run_dir)
        checks["report written"] = (run_dir / "report" / "index.html").exists()

    # 3. the resumed run against the uninterrupted one
    if fig["resume_images"]:
        r = fig["resume_images"]
        partway = 0 < fig["resume_images_at_kill"] < r * len(setting_ids)
        checks["the first resume process was killed during generation"] = fig["resume_killed"] and partway
        resumed = (
            rd_resume is not None and fig["resume_rc"] in (0, -signal.SIGKILL) and not fig["resume_stopped"]
        )
        if args.resume_through == "all":
            resumed = rd_resume is not None and fig["resume_rc"] == 0 and (rd_resume / "results.csv").exists()
        checks[f"resumed run finished (through {args.resume_through})"] = resumed
        if rd_resume is not None:
            a, b = image_hashes(run_dir, r), image_hashes(rd_resume, r)
            fig["resume_differing_images"] = sum(
                x != y or not y for s in a for x, y in zip(a[s], b.get(s, [""] * r))
            )
            checks[f"resumed images byte-identical to the uninterrupted run's first {r}"] = fig[
                "resume_differing_images"
            ] == 0 and set(a) == set(b)
            checks["resumed run left no temporary file"] = not any(rd_resume.rglob("*.tmp"))
            if args.resume_through == "all" and r == args.images and finished and resumed:
                ra = [{k: row.get(k) for k in COMPARED} for row in fig["results"]]
                rb = [{k: row.get(k) for k in COMPARED} for row in read_results(rd_resume)]
                checks["resumed results equal the uninterrupted run's"] = ra == rb
    return fig


def summary(fig: dict[str, Any]) -> str:
    lines = [f"# Scale rehearsal: {fig['images']} images per setting (cfg {fig['settings']}), "
             f"{fig['references']} references", ""]  # fmt: skip
    lines += [f"Command (from an empty directory): `{fig.get('command', '')}`", ""]
    if fig.get("pythonpath_needed"):
        lines += ["The console script did not import the plug-in from the current directory: "
                  f"`{fig.get('import_error', '')}`; the runs use PYTHONPATH=WORKDIR.", ""]  # fmt: skip
    if fig.get("stopped"):
        lines += [f"**Stopped at the deadline after {fmt_s(fig['total_s'])}; the stage times below are those it "
                  f"completed.** Last progress line: `{fig.get('last_progress')}`", ""]  # fmt: skip
    elif fig.get("rc") != 0:
        lines += [
            f"**The run failed (exit {fig.get('rc')}).** Last lines:",
            "",
            "```",
            *fig.get("tail", []),
            "```",
            "",
        ]
    if fig.get("stages"):
        lines += ["| stage | wall time | peak RSS (process tree, polled 2/s) |", "|---|---|---|"]
        for st in fig["stages"]:
            lines.append(f"| {st['stage']} | {fmt_s(st['seconds'])} | {fmt_bytes(st['peak_rss'])} |")
        lines.append(f"| **total** | **{fmt_s(fig['total_s'])}** | **{fmt_bytes(fig['peak_rss_polled'])}** |")
        lines.append("")
    if fig.get("chunk_seconds"):
        cs = ", ".join(f"{k} {v:.1f} s" for k, v in fig["chunk_seconds"].items())
        lines.append(f"Generation, summed per-chunk seconds (timing/): {cs}.")
    if "max_rss_time_v" in fig:
        lines.append(
            f"Peak RSS (`/usr/bin/time -v`, largest process): {fmt_bytes(fig['max_rss_time_v'])}; CPU time "
            f"user {fig['cpu_user_s']:.0f} s, system {fig['cpu_system_s']:.0f} s."
        )
    if fig.get("files"):
        lines += ["", f"Run directory `{fig['run_dir']}`: {fmt_bytes(fig['run_dir_bytes'])}", "",
                  "| path | files | size |", "|---|---|---|"]  # fmt: skip
        for path, n, b in fig["files"] + [("(cache) " + p, n, b) for p, n, b in fig["cache_files"]]:
            lines.append(f"| {path} | {n} | {fmt_bytes(b)} |")
    if fig.get("results"):
        lines += ["", "Results:", ""]
        for row in fig["results"]:
            lines.append(
                f"- {row['setting_id']}: FID {float(row['fid']):.2f} [{row.get('fid_lo', '')}, "
                f"{row.get('fid_hi', '')}], KID {float(row['kid_mean']):.4f}, P {float(row['precision']):.3f}, "
                f"R {float(row['recall']):.3f}, CLIP {float(row['clip_score']):.2f}, n {row['n_samples']}, "
                f"n_reference {row.get('n_reference', '')}"
            )
    if fig.get("resume_images"):
        lines += [
            "",
            f"Resume ({fig['resume_images']} images, run first, in its own directory and cache): SIGKILL with "
            f"{fig.get('resume_images_at_kill')} images on disk ({fig.get('resume_tmp_left_by_kill')} temporary "
            f"files left), then the same command: exit {fig.get('resume_rc')} in {fmt_s(fig.get('resume_s', 0.0))}; "
            f"images differing from the uninterrupted run: {fig.get('resume_differing_images', 'n/a')}.",
        ]
        lines += [f"  - {ln.strip()}" for ln in fig.get("resume_log_lines", [])]
    lines += ["", "| check | result |", "|---|---|"]
    lines += [f"| {k} | {'ok' if v else '**FAILED**'} |" for k, v in fig["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=10000, help="images per setting (default 10000)")
    p.add_argument("--settings", default="1", help="classifier-free scales, e.g. 1 or 1,3 (default 1)")
    p.add_argument("--references", type=int, help="reference images (default: --images)")
    p.add_argument(
        "--resume-images", type=int, help="size of the kill-and-resume run (default --images; 0 = skip)"
    )
    p.add_argument(
        "--resume-through", choices=["all", "generation"], default="all",
        help="the resumed run goes through the report (default) or stops once its images are complete",
    )  # fmt: skip
    p.add_argument("--kill-at", type=float, default=0.5, help="SIGKILL when this fraction of images exists")
    p.add_argument(
        "--kill-delay", type=float, default=0.01,
        help="seconds the plug-in sleeps per image in the process to be killed (changes no pixel), so that the "
        "kill lands inside generation",
    )  # fmt: skip
    p.add_argument("--bootstrap-resamples", type=int, help="passed on (default: the harness's)")
    p.add_argument("--threads", type=int, help="passed on as --threads (default: the CLI's)")
    p.add_argument("--progress", action="store_true", help="pass --progress (tqdm lines enter the log)")
    p.add_argument(
        "--stand-in-inception", action="store_true",
        help="run glidebench.cli.main with a cheap 2048-d stand-in for Inception (STAND_IN), to measure the rest "
        "of the harness at sizes where Inception on this CPU takes hours",
    )  # fmt: skip
    p.add_argument("--deadline-min", type=float, help="stop the run in progress after this many minutes and "
                   "summarise what completed (SIGTERM to this script does the same)")  # fmt: skip
    p.add_argument("--workdir", type=Path, help="where to run (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.resume_images is None:
        args.resume_images = args.images
    if args.deadline_min is not None:
        _DEADLINE[0] = time.monotonic() + 60 * args.deadline_min
    signal.signal(signal.SIGTERM, lambda *_: _DEADLINE.__setitem__(0, 0.0))
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        if any(args.workdir.iterdir()):
            raise SystemExit(f"--workdir {args.workdir} is not empty")
        work = args.workdir.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="glidebench-rehearsal-"))
    try:
        fig = rehearse(args, work)
        text = summary(fig)
        print("\n" + text, flush=True)
        if args.json:
            args.json.write_text(json.dumps(fig | {"summary": text}, indent=2, default=str))
        return 0 if fig["checks"] and all(fig["checks"].values()) and not fig.get("stopped") else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"\nkept {work}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
