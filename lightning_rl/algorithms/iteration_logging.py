"""``self.log`` for the metrics an algorithm logs once per iteration, at an eighth of its cost.

An iteration logs ~30 scalars (the sampling metrics, the learner's iteration means, the env-step
axis), each with the same arguments every time: ``on_step=False, on_epoch=True,
batch_size=1``. Lightning's ``LightningModule.log`` re-validates every call: it inspects
``training_step``'s signature, builds and compares the metric's metadata, and moves the stored
metric to the value's device through ``apply_to_collection``, which walks the metadata
dataclasses. That is ~265 us a call on this project's 2-core CI machine, 7.7 ms of a 53 ms PPO
CartPole iteration (14% of the run; ``benchmarks/ppo_cartpole.py``, ``between_updates`` and
``updates``).

:func:`log_iteration_metric` makes the first call of each metric in each hook through
``self.log``, so Lightning registers it and checks its arguments. A later call finds the metric
Lightning registered under the same key with the same settings and does what ``self.log`` then
does: at a hook's first log of a new epoch it resets the hook's metrics, and it adds the value
(``_ResultCollection.update_metrics``), ~32 us. Callbacks, the progress bar and the loggers see
exactly what ``self.log`` gives them (``tests/test_logging.py`` compares both). Every condition
the shortcut relies on is checked each call; when one does not hold (no Trainer, evaluation
with its dataloader index, other settings, a Lightning whose internals differ) the call goes
through ``self.log``.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

import lightning.pytorch as pl
import torch

#: ``reduce_fx`` names and the functions Lightning stores for them in a metric's metadata.
REDUCTIONS = {"mean": torch.mean, "max": torch.max}


def log_iteration_metric(
    module: pl.LightningModule,
    name: str,
    value: float | torch.Tensor,
    *,
    prog_bar: bool = False,
    reduce_fx: Literal["mean", "max"] = "mean",
    sync_dist: bool = False,
) -> None:
    """``module.log(name, value, on_step=False, on_epoch=True, batch_size=1, prog_bar=...,
    reduce_fx=..., sync_dist=...)``, through a shortcut once Lightning registered the metric."""
    metric = _registered_metric(module, name, prog_bar, reduce_fx)
    scalar = isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.numel() == 1)
    if metric is None or not scalar:
        module.log(
            name,
            value,
            prog_bar=prog_bar,
            on_step=False,
            on_epoch=True,
            reduce_fx=reduce_fx,
            sync_dist=sync_dist,
            batch_size=1,
        )
        return
    device = metric.value.device
    if isinstance(value, torch.Tensor):
        tensor = value.detach().reshape(()).to(device)
    else:
        tensor = torch.tensor(float(value), device=device, dtype=torch.get_default_dtype())
    trainer = module.trainer
    fx = metric.meta.fx
    if trainer._logger_connector.should_reset_tensors(fx):
        trainer._results.reset(metrics=False, fx=fx)  # what self.log does first in a new epoch's hook
    trainer._results.update_metrics(fx + "." + name, tensor, 1)
    trainer._logger_connector._current_fx = fx


def _registered_metric(module: pl.LightningModule, name: str, prog_bar: bool, reduce_fx: str) -> Any | None:
    """The metric ``self.log`` registered for ``name`` in the running hook with these settings,
    when the shortcut may add to it; None otherwise. (Its DDP sync, set at registration from
    the same arguments, applies when Lightning computes the epoch value, as with ``self.log``.)"""
    trainer = module._trainer
    fx = module._current_fx_name
    if trainer is None or fx is None:
        return None
    results = getattr(trainer, "_results", None)
    connector = getattr(trainer, "_logger_connector", None)
    if not isinstance(results, dict) or getattr(results, "dataloader_idx", 0) is not None:
        return None
    if connector is None or not callable(getattr(connector, "should_reset_tensors", None)):
        return None
    metric = results.get(fx + "." + name)
    meta = getattr(metric, "meta", None)
    if (
        meta is None
        or not metric.is_tensor
        or meta.name != name
        or meta.on_step
        or not meta.on_epoch
        or meta.prog_bar != prog_bar
        or not meta.logger
        or meta.reduce_fx is not REDUCTIONS.get(reduce_fx)
    ):
        return None
    return metric
