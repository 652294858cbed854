"""The shared base of offline algorithms (BC, MARWIL, CQL): where the data comes from.

An offline algorithm still has an env: it gives the spaces (checked against the data) and
runs evaluation episodes. Its experience comes from an
:class:`~lightning_rl.data.offline.OfflineDataModule`; one iteration (Lightning epoch) is
``dataset_num_iters_per_learner`` gradient updates on ``train_batch_size`` rows each.
"""

from __future__ import annotations

from typing import Any, ClassVar

from lightning_rl.algorithms.base import Algorithm
from lightning_rl.algorithms.gradient_clipping import clip_gradients, resolve_clip
from lightning_rl.data.offline import READ_METHODS, OfflineDataModule
from lightning_rl.data.source import SamplingSettings
from lightning_rl.errors import ConfigError, unknown_name_message
from lightning_rl.offline.reader import is_path_input
from lightning_rl.offline.rows import OfflineRequirements, check_action_space


class OfflineAlgorithm(Algorithm):
    """Offline data settings (RLlib's ``config.offline_data(...)`` names).

    Args:
        input_: recorded episodes: a directory, a Parquet file, a glob, or a list of them; or
            in-memory data (a list of TensorDicts, a torchrl replay buffer), which is used but
            not saved in the hyperparameters.
        input_read_method: ``"auto"`` (pyarrow when the data fits ``input_memory_budget_mb``,
            else Ray Data), ``"pyarrow"`` (read all into memory) or ``"ray"`` (stream with
            ``ray.data.read_parquet``).
        input_memory_budget_mb: memory the data may take: above it, ``"auto"`` streams; while
            streaming it caps Ray's object store use and the local shuffle buffer.
        input_shuffle_buffer_size: rows of the local shuffle buffer while streaming.
        dataset_num_iters_per_learner: gradient updates per iteration (Lightning epoch).
        train_batch_size: rows per gradient update.

    See :class:`~lightning_rl.algorithms.Algorithm` for env, evaluation and model args.
    """

    datamodule_class: ClassVar[type[OfflineDataModule]] = OfflineDataModule

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        input_: Any = None,
        input_read_method: str = "auto",
        input_memory_budget_mb: float = 1024.0,
        input_shuffle_buffer_size: int = 100_000,
        dataset_num_iters_per_learner: int = 100,
        train_batch_size: int = 512,
        **kwargs: Any,
    ) -> None:
        # In-memory data stays out of the hyperparameters (they must be plain data, and are
        # saved with every checkpoint): keep it aside and record None.
        in_memory = None
        if input_ is not None and not is_path_input(input_):
            in_memory, input_ = input_, None
        elif input_ is not None:
            input_ = [str(p) for p in input_] if isinstance(input_, list | tuple) else str(input_)
        super().__init__(env, env_config, train_batch_size=train_batch_size, **kwargs)
        if in_memory is not None:
            # A subclass's **kwargs still held the data when the hyperparameters were collected.
            self.save_hyperparameters({**self.hparams, "input_": None})
        self.offline_input = in_memory
        if self.is_multi_agent:
            raise ConfigError(f"{type(self).__name__} supports single-agent envs; this env is multi-agent.")
        check_action_space(self.env_action_space)

    def validate_hparams(self) -> None:
        h = self.hparams
        if h.get("clip_rewards"):
            raise ConfigError(
                f"clip_rewards={h.clip_rewards!r}: {type(self).__name__} learns from offline data, whose "
                "rewards are used as recorded (clip_rewards clips rewards sampled from envs); leave it unset."
            )
        if h.input_read_method not in READ_METHODS:
            raise ConfigError(
                unknown_name_message("input_read_method", str(h.input_read_method), READ_METHODS)
            )
        self.require_positive(
            input_memory_budget_mb=h.input_memory_budget_mb,
            input_shuffle_buffer_size=h.input_shuffle_buffer_size,
            dataset_num_iters_per_learner=h.dataset_num_iters_per_learner,
        )
        for name in ("input_shuffle_buffer_size", "dataset_num_iters_per_learner"):
            if not isinstance(h[name], int) or isinstance(h[name], bool):
                raise ConfigError(f"{name} must be a positive integer, got {h[name]!r}.")

    def sampling_settings(self) -> SamplingSettings:
        """In-memory ``input_`` is not in the hyperparameters; the DataModule gets it here."""
        settings = super().sampling_settings()
        return (
            settings
            if self.offline_input is None
            else settings.with_overrides({"input_": self.offline_input})
        )

    def offline_requirements(self) -> OfflineRequirements:
        """Which columns beyond observation and action the losses need (override)."""
        return OfflineRequirements(gamma=float(self.hparams.gamma))

    @property
    def num_env_steps_trained_lifetime(self) -> int:
        """Rows learned from so far (RLlib's ``num_env_steps_trained_lifetime``)."""
        return int(getattr(self.experience, "num_env_steps_trained_lifetime", 0))

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        clip_gradients(
            self, optimizer, *resolve_clip(self.hparams, gradient_clip_val, gradient_clip_algorithm)
        )
