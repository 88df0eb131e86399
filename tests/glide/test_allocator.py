"""glide.fast.tune_cpu_allocator: what it sets, when it stands aside, and that it changes no number.

The same-bits claim is checked end to end in tests/glidebench/test_fast_figures.py (bench_allocator's child
processes, plain glibc against tuned) and on the default run in docs/performance.md."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

glibc_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")


def _in_child(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter (the setting is process-wide) and return its last stdout line."""
    import os

    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | (env or {}),
        check=True,
    )
    return proc.stdout.strip().splitlines()[-1]


@glibc_linux
def test_tunes_glibc_and_reports_it():
    out = _in_child(
        """
        from glide.fast import tune_cpu_allocator, cpu_allocator_state
        assert cpu_allocator_state() is None
        state = tune_cpu_allocator()
        assert tune_cpu_allocator() == state == cpu_allocator_state()  # a second call is harmless
        print(state)
        """
    )
    if out == "None":
        pytest.skip("this libc is not glibc")
    assert out.startswith("glibc ") and "mmap and trim thresholds 1073741824 bytes" in out


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"},
    ],
)
def test_the_users_own_malloc_setting_stands(env):
    code = "from glide.fast import tune_cpu_allocator, cpu_allocator_state\n"
    code += "print(tune_cpu_allocator(), cpu_allocator_state())"
    assert _in_child(code, env) == "None None"


def test_glidebench_cli_tunes_unless_told_not_to(tmp_path):
    code = """
        import sys
        from glidebench.cli import main
        from glide.fast import cpu_allocator_state
        main(["report", sys.argv[-1] + "/no-such-run"])  # fails at once, after the CLI's start-up
        print(cpu_allocator_state() is not None)
        """
    tuned = _in_child(code.replace("sys.argv[-1]", repr(str(tmp_path))))
    plain = _in_child(code.replace("sys.argv[-1]", repr(str(tmp_path))), {"GLIDEBENCH_TUNE_MALLOC": "0"})
    assert plain == "False"
    assert tuned in ("True", "False")  # False only where the libc is not glibc
    if (
        sys.platform.startswith("linux")
        and _in_child("from glide.fast import tune_cpu_allocator; print(tune_cpu_allocator() is not None)")
        == "True"
    ):
        assert tuned == "True"
