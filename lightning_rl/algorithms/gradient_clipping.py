"""Gradient clipping by RLlib's ``grad_clip`` and ``grad_clip_by`` settings, for every algorithm.

RLlib clips each optimizer's gradients in one of three ways (``AlgorithmConfig.training``):

* ``"global_norm"`` (RLlib's default): scale all the optimizer's gradients together so that
  their joint L2 norm is at most ``grad_clip``;
* ``"norm"``: scale each parameter's gradient on its own so that its L2 norm is at most
  ``grad_clip``;
* ``"value"``: clamp every gradient element into ``[-grad_clip, grad_clip]``.

``"global_norm"`` and ``"value"`` are Lightning's own ``"norm"`` and ``"value"`` clipping, so they
go through ``LightningModule.clip_gradients`` (precision plugins and strategies see them as
always; a config that never names ``grad_clip_by`` clips exactly as before the setting existed).
``"norm"`` has no Lightning twin and is done here on the optimizer's parameters. Every algorithm
calls :func:`clip_gradients` where it clipped before, and checks its settings with
:func:`check_grad_clip`, so the three modes mean the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from lightning_rl.errors import ConfigError

#: RLlib's ``grad_clip_by`` choices; the first is the default.
GRAD_CLIP_BY = ("global_norm", "norm", "value")
DEFAULT_GRAD_CLIP_BY = "global_norm"
# Lightning's gradient_clip_algorithm (Trainer or configure_gradient_clipping) -> ours.
_FROM_LIGHTNING = {"norm": "global_norm", "value": "value"}


def check_grad_clip(grad_clip: Any, grad_clip_by: Any = DEFAULT_GRAD_CLIP_BY) -> None:
    """One :class:`ConfigError` for a ``grad_clip`` that is not None or a positive finite number,
    or a ``grad_clip_by`` outside :data:`GRAD_CLIP_BY`."""
    if grad_clip is not None and (
        isinstance(grad_clip, bool)
        or not isinstance(grad_clip, int | float)
        or not math.isfinite(grad_clip)
        or grad_clip <= 0
    ):
        raise ConfigError(f"grad_clip must be a positive number or None, got {grad_clip!r}.")
    if grad_clip_by not in GRAD_CLIP_BY:
        raise ConfigError(f"grad_clip_by must be one of {list(GRAD_CLIP_BY)}, got {grad_clip_by!r}.")


def resolve_clip(
    hparams: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
) -> tuple[float | None, str]:
    """``(clip, clip_by)`` of one clipping call: the Trainer's ``gradient_clip_val`` /
    ``gradient_clip_algorithm`` where given (automatic optimisation passes them), else the
    algorithm's ``grad_clip`` / ``grad_clip_by`` (``.get``: checkpoints older than the setting)."""
    clip = gradient_clip_val if gradient_clip_val is not None else hparams.get("grad_clip")
    if gradient_clip_algorithm is not None:
        name = getattr(gradient_clip_algorithm, "value", gradient_clip_algorithm)
        return clip, _FROM_LIGHTNING[str(name).lower()]
    return clip, hparams.get("grad_clip_by") or DEFAULT_GRAD_CLIP_BY


def clip_gradients(
    module: Any, optimizer: Any, grad_clip: float | None, grad_clip_by: str = DEFAULT_GRAD_CLIP_BY
) -> None:
    """Clip ``optimizer``'s gradients as ``grad_clip_by`` says (``module``: the LightningModule
    that owns the optimizer, attached to its Trainer); no ``grad_clip`` (None or 0) clips nothing."""
    if not grad_clip:
        return
    if grad_clip_by == "global_norm":
        module.clip_gradients(optimizer, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
    elif grad_clip_by == "value":
        module.clip_gradients(optimizer, gradient_clip_val=grad_clip, gradient_clip_algorithm="value")
    elif grad_clip_by == "norm":
        clip_each_norm_(module.trainer.precision_plugin.main_params(optimizer), float(grad_clip))
    else:
        check_grad_clip(grad_clip, grad_clip_by)  # raises, naming the choices


def clip_each_norm_(parameters: Iterable[torch.Tensor], max_norm: float) -> None:
    """RLlib's ``grad_clip_by="norm"``: every gradient whose own L2 norm exceeds ``max_norm`` is
    scaled down to it (in place), independently of the others."""
    for parameter in parameters:
        grad = parameter.grad
        if grad is None:
            continue
        # min(1, max_norm / norm), as a tensor (no host sync per parameter); a non-finite norm
        # scales by 0 or NaN, as torch's clip_grad_norm_ (the non-finite guard skips that update).
        norm = torch.linalg.vector_norm(grad)
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
