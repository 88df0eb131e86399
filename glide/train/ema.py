"""Exponential moving average of model weights (Polyak averaging), kept in float32.

``ema <- rate * ema + (1 - rate) * param`` after every optimizer step, as guided-diffusion's
``update_ema``. With ``warmup`` the effective rate is ``min(rate, (1 + n) / (10 + n))`` (n = updates so far),
which keeps short runs from being dominated by the random initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """A float32 shadow copy of a module's floating-point state."""

    def __init__(self, model: nn.Module, rate: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"EMA rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.warmup = warmup
        self.updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    def current_rate(self) -> float:
        if not self.warmup:
            return self.rate
        return min(self.rate, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        rate = self.current_rate()
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.mul_(rate).add_(v.detach().float(), alpha=1 - rate)
            else:
                s.copy_(v)
        self.updates += 1

    def state_dict(self) -> dict[str, object]:
        return {
            "shadow": dict(self.shadow),
            "updates": self.updates,
            "rate": self.rate,
            "warmup": self.warmup,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        shadow = state["shadow"]
        missing = set(self.shadow) - set(shadow)  # type: ignore[arg-type]
        if missing:
            raise ValueError(
                f"EMA state lacks {len(missing)} tensors (e.g. {sorted(missing)[:3]}): wrong model"
            )
        self.shadow = {k: shadow[k].float().clone() for k in self.shadow}  # type: ignore[index]
        self.updates = int(state["updates"])  # type: ignore[arg-type]

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (cast to its dtypes)."""
        for k, v in model.state_dict().items():
            v.copy_(self.shadow[k].to(v.dtype))
