"""The optimizer every algorithm builds by default: Adam with the fastest kernel allowed."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision


def fast_adam(params: Any, trainer: pl.Trainer | None, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fused kernel where the parameters allow it: one kernel for all parameters
    instead of a Python loop over them (~0.2 ms per PPO update on CartPole).

    Under a mixed-precision Trainer (``precision="bf16-mixed"`` or ``"16-mixed"``) it is the
    multi-tensor ``foreach`` kernel instead: Lightning refuses to clip the gradients of an
    optimizer that unscales them itself, as the fused one does, and most algorithms clip.
    """
    params = list(params)
    if trainer is not None and isinstance(trainer.precision_plugin, MixedPrecision):
        return torch.optim.Adam(params, foreach=True, **kwargs)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, **kwargs)
