"""Dream visualisation: what DreamerV3's world model predicts, logged as images.

A world model whose loss falls can still dream nonsense a few steps past its context, and
that is what decides whether imagination teaches the actor anything. :class:`LogDreams`
takes replayed windows, lets the model observe the first ``context_steps`` steps and dream on
(open loop) with the replayed actions, and logs truth and dream side by side to the Trainer's
loggers that take images (wandb, TensorBoard); other loggers are skipped.

* Image observations: a grid with one truth row and one dream row per window, one column per
  step (at most ``max_steps``), in the decoder's [-0.5, 0.5] scale mapped to pixels.
* Vector observations: per window, a heatmap of truth, dream and their absolute error (rows:
  observation dimensions, columns: steps) in symlog space, where the decoder is trained.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from tensordict import TensorDict

from lightning_rl.errors import ConfigError


class LogDreams(pl.Callback):
    """Logs open-loop dreams every ``every_n_epochs`` iterations (see the module docstring)."""

    def __init__(
        self,
        every_n_epochs: int = 10,
        num_windows: int = 4,
        context_steps: int = 5,
        max_steps: int = 16,
        key: str = "dreams/open_loop",
    ) -> None:
        for name, value in (
            ("every_n_epochs", every_n_epochs),
            ("num_windows", num_windows),
            ("context_steps", context_steps),
            ("max_steps", max_steps),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"LogDreams {name} must be a positive integer, got {value!r}.")
        self.every_n_epochs = every_n_epochs
        self.num_windows = num_windows
        self.context_steps = context_steps
        self.max_steps = max_steps
        self.key = key
        self.last_image: np.ndarray | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        image = self.dream_image(pl_module)
        if image is None:
            return
        self.last_image = image
        for logger in trainer.loggers:
            log_image(logger, self.key, image, step=trainer.global_step)

    def dream_image(self, algorithm: Any) -> np.ndarray | None:
        """An ``[H, W, 3]`` uint8 image of truth and dream, or None before any window is stored."""
        buffer = getattr(algorithm.experience, "buffer", None)
        length = int(algorithm.hparams.batch_length_T)
        if buffer is None or int(buffer.num_windows(length).sum()) == 0:
            return None
        window = {k: v.to(algorithm.device) for k, v in buffer.sample(self.num_windows, length).items()}
        window = TensorDict(window, batch_size=[self.num_windows, length])
        context = min(self.context_steps, length - 1)
        truth, dream = algorithm.module.open_loop_prediction(window, context)
        steps = min(self.max_steps, length)
        truth, dream = truth[:, :steps].float().cpu(), dream[:, :steps].float().cpu()
        if algorithm.module.world_model.image:
            return image_grid(truth, dream, algorithm.module.world_model.encoder.channels_last)
        return vector_heatmap(truth, dream)


def image_grid(truth: torch.Tensor, dream: torch.Tensor, channels_last: bool) -> np.ndarray:
    """``[B, T, image]`` truth and dream in [-0.5, 0.5] -> one grid, rows truth/dream per window."""
    if not channels_last:
        truth, dream = truth.permute(0, 1, 3, 4, 2), dream.permute(0, 1, 3, 4, 2)
    rows = torch.stack([truth, dream], 1).flatten(0, 1)  # [2B, T, H, W, C]
    rows = ((rows + 0.5).clamp(0, 1) * 255).to(torch.uint8)
    if rows.shape[-1] == 1:
        rows = rows.expand(*rows.shape[:-1], 3)
    rows = rows[..., :3]
    n, t, h, w, c = rows.shape
    return rows.permute(0, 2, 1, 3, 4).reshape(n * h, t * w, c).numpy()


def vector_heatmap(truth: torch.Tensor, dream: torch.Tensor, cell: int = 8) -> np.ndarray:
    """``[B, T, D]`` truth and dream -> per window a block of truth, dream and |error| rows
    (D rows each, one column per step), blue (low) to red (high), scaled per observation
    dimension over truth and dream together."""
    error = (truth - dream).abs()
    low = torch.minimum(truth.amin((0, 1)), dream.amin((0, 1)))
    high = torch.maximum(truth.amax((0, 1)), dream.amax((0, 1)))
    scale = (high - low).clamp_min(1e-6)
    blocks = []
    for b in range(truth.shape[0]):
        parts = [(truth[b] - low) / scale, (dream[b] - low) / scale, error[b] / scale]
        block = torch.cat([p.T for p in parts], 0)  # [3D, T]
        blocks.append(torch.cat([block, torch.full((1, block.shape[1]), float("nan"))], 0))
    values = torch.cat(blocks, 0).clamp(0, 1)
    rgb = torch.stack([values, torch.zeros_like(values), 1 - values], -1)
    rgb = torch.nan_to_num(rgb, nan=1.0)  # white separator rows between windows
    pixels = (rgb * 255).to(torch.uint8).numpy()
    return pixels.repeat(cell, 0).repeat(cell, 1)


def log_image(logger: Any, key: str, image: np.ndarray, step: int) -> bool:
    """Log an ``[H, W, 3]`` uint8 image to a logger that takes images; False for the others."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, WandbLogger):
        logger.log_image(key, images=[image], step=step)
        return True
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, image, step, dataformats="HWC")
        logger.experiment.flush()
        return True
    return False
