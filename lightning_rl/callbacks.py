"""Stopping and checkpointing rules of RL runs as Lightning callbacks (RLlib's ``stop={...}`` dict,
``checkpoint_frequency`` and ``checkpoint_at_end``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class StopOnEnvSteps(pl.Callback):
    """Stop after the iteration in which ``max_env_steps`` env steps were sampled in total.

    That iteration is kept in ``reached_at`` as ``(iteration, env_steps)``.
    """

    def __init__(self, max_env_steps: int) -> None:
        self.max_env_steps = int(max_env_steps)
        self.reached_at: tuple[int, int] | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        steps = pl_module.num_env_steps_sampled_lifetime
        if steps >= self.max_env_steps:
            if self.reached_at is None:
                self.reached_at = (trainer.current_epoch, steps)
            trainer.should_stop = True


class StopOnReturn(pl.Callback):
    """Stop once a return metric reaches ``threshold``.

    The default metric is the evaluation mean (checked after each evaluation); training
    metrics such as ``env_runners/episode_return_mean`` (the rolling mean of the last 100
    training episodes) are checked at the end of each iteration. The first iteration that
    met the target is kept in ``reached_at`` as ``(iteration, env_steps)``.
    """

    def __init__(self, threshold: float, metric: str = "evaluation/episode_return_mean") -> None:
        self.threshold = float(threshold)
        self.metric = metric
        self.reached_at: tuple[int, int] | None = None

    def _check(self, trainer: pl.Trainer, pl_module: Any) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if value is not None and float(value) >= self.threshold:
            if self.reached_at is None:
                self.reached_at = (trainer.current_epoch, pl_module.num_env_steps_sampled_lifetime)
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.metric.startswith("evaluation/") and not trainer.sanity_checking:
            self._check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not self.metric.startswith("evaluation/"):
            self._check(trainer, pl_module)


class CheckpointOnInterrupt(pl.Callback):
    """Save a checkpoint when a run is stopped by SIGTERM or SIGINT (Ctrl+C), then let it stop.

    Lightning turns SIGTERM into an exception right after the current minibatch (a clean
    point: the optimizer step is done), and Ctrl+C into ``KeyboardInterrupt``; both reach
    ``on_exception``. The checkpoint goes to ``dirpath`` (default: the ModelCheckpoint's
    directory, else ``<default_root_dir>/checkpoints``) as ``interrupted.ckpt``; resume with
    ``fit(ckpt_path=...)``.

    A resumed run redoes the interrupted iteration, sample included (the sample itself is not
    saved), so the checkpoint carries the sampling counters as they were when that iteration
    began: every env step is counted once, and N iterations after a resume mean N samples.
    """

    #: Counters of the experience DataModule that one iteration's sample advances.
    SAMPLE_COUNTERS = ("num_env_steps_sampled_lifetime", "num_episodes_lifetime")

    def __init__(self, dirpath: str | None = None, filename: str = "interrupted.ckpt") -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.saved_path: str | None = None
        self._counters_at_iteration_start: dict[str, int] = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        experience = getattr(pl_module, "experience", None)
        self._counters_at_iteration_start = {
            name: getattr(experience, name) for name in self.SAMPLE_COUNTERS if hasattr(experience, name)
        }

    def _rewind_unfinished_iteration(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Before an interrupted save: if the iteration's training did not finish, resuming will
        sample it again, so its first sample must not be in the saved counters."""
        epoch_loop = trainer.fit_loop.epoch_loop
        if epoch_loop.batch_progress.current.completed >= trainer.num_training_batches:
            return  # training of this iteration is done (interrupted in evaluation): kept
        experience = getattr(pl_module, "experience", None)
        for name, value in self._counters_at_iteration_start.items():
            setattr(experience, name, value)

    def _path(self, trainer: pl.Trainer) -> Path:
        dirpath = self.dirpath
        if dirpath is None and trainer.checkpoint_callback is not None:
            dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
        if dirpath is None:
            dirpath = Path(trainer.default_root_dir) / "checkpoints"
        return Path(dirpath) / self.filename

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, KeyboardInterrupt | SIGTERMException) or trainer.state.fn != "fit":
            return
        path = self._path(trainer)
        self._rewind_unfinished_iteration(trainer, pl_module)  # the run stops: nothing else reads them
        trainer.save_checkpoint(path)
        self.saved_path = str(path)
        if trainer.is_global_zero:
            print(f"[lightning-rl] interrupted: checkpoint saved to {path}", flush=True)


class IterationCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` paced for RL iterations: every ``every_n_epochs`` iterations
    (default 10) and always at the last one, the run's final weights.

    One Lightning epoch is one training iteration here, often tens of milliseconds (PPO on
    CartPole: ~45 ms with 256-step batches, ~70 ms with the README job's 512), and a checkpoint
    costs ~5-15 ms to write (weights, optimizer, the run's RNG and counters, the checksum):
    saving every iteration, ``ModelCheckpoint``'s default, spent 6-13% of the README job's time
    with 256-step batches. RLlib checkpoints every ``checkpoint_frequency``
    iterations and at the end (``checkpoint_at_end``); this does the same, so a crash loses at
    most ``every_n_epochs`` iterations and a finished run always leaves its final weights.

    The last iteration is the one after which the Trainer stops: a stop callback's
    ``should_stop`` (``StopOnReturn``, ``StopOnEnvSteps``; Lightning runs checkpoint callbacks
    after the others), ``max_epochs`` or ``max_steps``; it is saved at its end like the others,
    so its file name counts epochs the same way. A stop that only shows itself after the
    iteration (``max_time``) is saved when training ends. Everything else is ModelCheckpoint's:
    pass ``every_n_epochs=1`` to save every iteration again, or ``monitor``/``save_top_k`` to keep
    the best.
    """

    def __init__(
        self, *args: Any, every_n_epochs: int = 10, save_on_train_epoch_end: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(
            *args, every_n_epochs=every_n_epochs, save_on_train_epoch_end=save_on_train_epoch_end, **kwargs
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer) and self._is_last_iteration(trainer):
            self._save_now(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer) and self._is_last_iteration(trainer):
            self._save_now(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_now(trainer)  # nothing when the last iteration was saved already

    @staticmethod
    def _is_last_iteration(trainer: pl.Trainer) -> bool:
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
        last = (
            trainer.should_stop
            or 0 <= max_epochs <= trainer.current_epoch + 1
            or 0 <= trainer.max_steps <= trainer.global_step
        )
        if trainer.world_size > 1:
            # One decision for all DDP ranks (a stop callback may have stopped one rank only): a
            # save is a collective, and a rank saving alone would wait for the others forever.
            last = trainer.strategy.reduce_boolean_decision(bool(last), all=False)
        return bool(last)

    def _save_now(self, trainer: pl.Trainer) -> None:
        if self._should_skip_saving_checkpoint(trainer):
            return  # not fitting, or this step is saved already
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
