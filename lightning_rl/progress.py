"""A progress bar that speaks RL: iteration, env steps, episode return and env steps per second.

Lightning's bar counts epochs and minibatches and prints metric names such as
``env_runners/episode_return_mean`` in full. :class:`RLProgressBar` shows one line per
training iteration (one epoch) with short labels, and takes the sampling numbers from the
algorithm's DataModule as soon as the iteration's sample is in, instead of the previous
iteration's epoch-level values. It is opt-in for plain ``Trainer`` users
(``Trainer(callbacks=[RLProgressBar()])``) and the default of the ``lightning-rl`` CLI and of
:class:`~lightning_rl.TrainingRun` when their progress bar is on.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = ["RLProgressBar"]

# metric -> label on the bar, in display order
LABELS = {
    "num_env_steps_sampled_lifetime": "env_steps",
    "env_runners/episode_return_mean": "return",
    "evaluation/episode_return_mean": "eval_return",
    "env_runners/env_steps_per_s": "steps/s",
}
_INTEGERS = {"num_env_steps_sampled_lifetime", "env_runners/env_steps_per_s"}


class RLProgressBar(TQDMProgressBar):
    """TQDM bar labelled ``Iteration N`` with env steps, mean return and env steps/s."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Iteration {trainer.current_epoch + 1}")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        values = {key: items[key] for key in LABELS if key in items}
        values.update(_live_sampling_metrics(pl_module))
        # Formatted here: Lightning's bar would show 3 significant digits (12345 steps -> 1.23e+04).
        shown: dict[str, Any] = {}
        for key, label in LABELS.items():
            if key in values:
                value = float(values[key])
                shown[label] = f"{value:.0f}" if key in _INTEGERS else f"{value:.2f}"
        # The user's own prog_bar metrics (and the logger version) after ours.
        shown.update({key: value for key, value in items.items() if key not in LABELS})
        return shown


def _live_sampling_metrics(pl_module: pl.LightningModule) -> dict[str, float]:
    """The DataModule's numbers of the sample just taken, when the module samples through one
    (an algorithm's ``experience``); read by attribute, so the bar needs no algorithm class."""
    last_metrics = getattr(getattr(pl_module, "experience", None), "last_metrics", None)
    if not isinstance(last_metrics, dict):
        return {}
    return {k: v for k, v in last_metrics.items() if k in LABELS}
