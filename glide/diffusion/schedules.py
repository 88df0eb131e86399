"""Noise schedules (Nichol & Dhariwal 2021, eq. 17) as float64 numpy arrays, and timestep respacing.

``space_timesteps`` reproduces the official string forms exactly, including the repeated float addition
and Python's round-half-to-even that decide which steps are kept ("N", "a,b,c", "ddimN", "fast27"). One form is
not official: "quadN", the time-quadratic spacing of DPM-Solver (Lu et al. 2022, ``skip_type="time_quadratic"``),
t_i = round((T - 1) (i / (N - 1))^2), which puts the steps where the noise is low. Uniform spacing ("N") makes the
last step of a 12-step run jump from t = 91 to t = 0, 6.4 of the cosine schedule's 30 units of log-SNR in one
step; "quad12" makes that step t = 8 -> 0 (2.6 units).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def betas_for_alpha_bar(
    num_steps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999
) -> np.ndarray:
    """beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta)."""
    betas = []
    for i in range(num_steps):
        t1, t2 = i / num_steps, (i + 1) / num_steps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas, dtype=np.float64)


def get_named_beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """'linear' (scaled to T so it matches the 1000-step schedule) or 'squaredcos_cap_v2' (cosine)."""
    if name == "linear":
        scale = 1000 / num_steps
        return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)
    if name == "squaredcos_cap_v2":
        return betas_for_alpha_bar(num_steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise ValueError(f"unknown beta schedule {name!r}; use 'linear' or 'squaredcos_cap_v2'")


def quadratic_timesteps(num_timesteps: int, n: int) -> set[int]:
    """``n`` timesteps t_i = round((T - 1) (i / (n - 1))^2), i = 0..n-1; a step that rounds onto the one before it
    moves up to the next free timestep, so there are always exactly ``n`` distinct steps from 0 to T - 1."""
    if not 2 <= n <= num_timesteps:
        raise ValueError(f"quad{n}: need 2 <= steps <= {num_timesteps}")
    steps: list[int] = []
    for i in range(n):
        t = round((num_timesteps - 1) * (i / (n - 1)) ** 2)
        steps.append(max(t, steps[-1] + 1) if steps else t)
    if steps[-1] != num_timesteps - 1:  # only when the bumps ran past the end: impossible for n <= T
        raise AssertionError(steps)
    return set(steps)


def space_timesteps(num_timesteps: int, section_counts: str | list[int]) -> set[int]:
    """The set of original timesteps kept by a respacing spec (official semantics)."""
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec.startswith("ddim"):
            desired = int(spec[len("ddim") :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(
                f"cannot create exactly {desired} steps with an integer stride from {num_timesteps}"
            )
        if spec.startswith("quad") and spec[4:].isdigit():
            return quadratic_timesteps(num_timesteps, int(spec[4:]))
        if spec == "fast27":
            steps = space_timesteps(num_timesteps, "10,10,3,2,2")
            # As the official code: drop the noisiest step, which causes DDIM artifacts, for a slightly less noisy one.
            steps.remove(num_timesteps - 1)
            steps.add(num_timesteps - 3)
            return steps
        try:
            section_counts = [int(x) for x in spec.split(",")]
        except ValueError:
            raise ValueError(
                f"invalid respacing {section_counts!r}: use 'N', 'a,b,c', 'ddimN', 'quadN' or 'fast27'"
            ) from None
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps: list[int] = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError(f"cannot divide a section of {size} steps into {section_count}")
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        for _ in range(section_count):
            all_steps.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        start_idx += size
    return set(all_steps)
