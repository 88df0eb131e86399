"""The CLI's CPU threads per stage of a run: the selection from --threads, OMP_NUM_THREADS, the CPU count and
the load average (mocked; no timing), and a run that sets them stage by stage and says so in its log."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glidebench import cli
from glidebench.runner import threads as T
from glidebench.runner.threads import StageThreads, use_threads

from .harness import base_args


@pytest.mark.parametrize(
    ("cpus", "default", "load1", "sampling"),
    [
        (2, 2, 0.0, 2),  # idle: one per physical core
        (2, 2, 0.4, 2),  # 1.6 CPUs free rounds to 2
        (2, 2, 1.0, 1),  # one busy process beside: one thread
        (2, 2, 5.5, 1),  # overloaded: one thread, never 0
        (32, 32, 4.2, 28),  # a big node: the CPUs left free
        (32, 16, 0.0, 16),  # never more than torch's default (one per physical core)
    ],
)
def test_default_threads_follow_the_free_cpus_and_metrics_take_one(cpus, default, load1, sampling):
    t = T.stage_threads(None, None, default, cpus, load1)
    assert (t.sampling, t.metrics) == (sampling, 1)
    assert f"load average {load1:.2f} on {cpus} CPUs" in t.reason


def test_threads_flag_then_the_environment_set_every_stage():
    assert T.stage_threads(3, 1, 2, 2, 9.0) == StageThreads(3, 3, "--threads, every stage", 3, 3)
    assert T.stage_threads(None, 1, 2, 2, 0.0) == StageThreads(1, 1, "OMP_NUM_THREADS, every stage", 1, 1)
    no_load = T.stage_threads(None, None, 2, 2, None)
    assert (no_load.sampling, no_load.metrics, no_load.pairwise) == (2, 1, None)


@pytest.mark.parametrize(("busy", "want"), [(0.0, 2), (0.4, 2), (1.0, 1), (3.0, 1), (None, 1)])
def test_pairwise_products_take_the_cpus_free_when_the_pass_starts(monkeypatch, busy, want):
    """Idle: both cores (the pass's float64 products gain 1.7-1.9x); beside a busy process or more: one."""
    monkeypatch.setattr(T, "cpus", lambda: 2)
    monkeypatch.setattr(T, "runnable", lambda: None)  # no /proc/loadavg: the metric stage's one thread
    auto = T.stage_threads(None, None, 2, 2, 0.0)
    assert T.pairwise_threads(auto, busy) == want
    assert T.pairwise_threads(T.stage_threads(3, None, 2, 2, 0.0), 0.0) == 3  # --threads: every stage
    assert T.pairwise_threads(None, 0.0) is None  # a library caller: left as it is
    assert "pairwise products the CPUs free at each setting (at most 2)" in auto.describe()


def test_runnable_reads_the_running_tasks_now():
    busy = T.runnable(samples=2, interval=0.0)
    assert busy is None or 0 <= busy < 10_000


def test_torch_threads_are_restored_after_the_pass():
    from glidebench.metrics.pairs import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_variables_configure_threads_wrote_are_not_the_users(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cli, "_ENV_WRITTEN", {})
    assert cli._env_threads() is None
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    cli._set_thread_env(1)
    assert cli._env_threads() is None  # ours, not the user's
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cli._env_threads() == 3


def test_stage_threads_reject_zero():
    with pytest.raises(ValueError, match="thread counts must be >= 1"):
        StageThreads(0, 1, "x")


def test_use_threads_sets_torch_per_stage():
    use_threads(StageThreads(2, 1, "x"), "sampling")
    assert torch.get_num_threads() == 2
    use_threads(StageThreads(2, 1, "x"), "metrics")
    assert torch.get_num_threads() == 1
    use_threads(None, "sampling")  # a library caller's count is left alone
    assert torch.get_num_threads() == 1


def test_a_run_sets_each_stage_and_logs_it(env: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Idle machine (mocked): sampling and features at torch's default (2, faked), metrics at 1; the set calls
    are recorded, not made, so the run itself stays on one thread."""
    state = {"now": 2, "sets": []}

    def fake_set(n: int) -> None:
        state["sets"].append(n)
        state["now"] = n

    monkeypatch.setattr(torch, "get_num_threads", lambda: state["now"])
    monkeypatch.setattr(torch, "set_num_threads", fake_set)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cli, "_ENV_WRITTEN", {})
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(T, "load1", lambda: 0.1)
    monkeypatch.setattr(T, "cpus", lambda: 2)
    monkeypatch.setattr(T, "runnable", lambda: 1.0)  # another task runs: each setting's pairwise pass gets 1
    assert cli.main(base_args(env / "runs", "--bootstrap-resamples", "0")) == 0
    out = capsys.readouterr().out
    assert (
        "threads: sampling and features 2, metrics 1, pairwise products the CPUs free at each setting (at most 2)"
        " (1-minute load average 0.10 on 2 CPUs" in out
    )
    # configure_threads (torch's default), then the metric stage; the pairwise pass's 1 is already set
    assert state["sets"] == [2, 1]
