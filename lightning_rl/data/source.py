"""What a DataModule needs from the learner to sample: a small typed interface, one direction.

A DataModule builds EnvRunner groups, broadcasts the current policy state to them, folds their
connector statistics back in and hands sampled batches to a post-processing hook (GAE,
V-trace, n-step ...). It needs nothing else of the algorithm, and depends on exactly that:
:class:`ExperienceSource` (a ``typing.Protocol``, so the algorithm implements it without
inheriting anything from the data layer, and a test can build a DataModule against a plain
fake) and :class:`SamplingSettings`, the settings it reads, as typed fields.

The data layer never imports ``lightning_rl.algorithms``: data flows from runners through
DataModules into the algorithm, and weights flow back only through ``policy_state()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from gymnasium import spaces

from lightning_rl.connectors.base import EnvToModulePipeline
from lightning_rl.env_runners.env_runner_group import FaultToleranceConfig
from lightning_rl.errors import ConfigError, unknown_name_message
from lightning_rl.offline.rows import OfflineRequirements


@dataclass(frozen=True)
class SamplingSettings:
    """Every setting a DataModule reads, with the defaults used where an algorithm has no such
    setting (e.g. ``num_epochs`` for IMPALA, ``minibatch_size`` for DQN).

    The names are RLlib's and the algorithms' hyperparameter names, so
    :meth:`from_hparams` fills them from any algorithm's hyperparameters and a DataModule's
    keyword overrides (``OnPolicyDataModule(num_env_runners=4)``) use the same names.
    """

    # Runners and sampling (every algorithm).
    num_env_runners: int = 0
    num_envs_per_env_runner: int = 1
    num_cpus_per_env_runner: float = 1.0
    rollout_fragment_length: int | Literal["auto"] = "auto"
    train_batch_size: int = 2048
    seed: int | None = None
    metrics_num_episodes_for_smoothing: int = 100
    # Evaluation runners.
    evaluation_num_env_runners: int = 0
    evaluation_duration: int = 10
    evaluation_num_envs_per_env_runner: int | None = None
    evaluation_explore: bool = False
    evaluation_duration_unit: str = "episodes"
    evaluation_sample_timeout_s: float | None = 120.0
    evaluation_parallel_to_training: bool = False
    # A callable (the algorithm resolves a stored import path before it gets here).
    custom_evaluation_function: Any = None
    # The Ray cluster.
    address: str | None = None
    ray_init_kwargs: dict[str, Any] | None = None
    ray_resources_timeout_s: float | None = 600.0
    # On-policy and asynchronous minibatching.
    minibatch_size: int | None = None
    num_epochs: int = 1
    train_batches_per_iteration: int = 1
    circular_buffer_num_batches: int | None = None
    circular_buffer_iterations_per_batch: int | None = None
    broadcast_interval: int = 1
    max_requests_in_flight_per_env_runner: int = 2
    # Replay.
    replay_buffer_config: dict[str, Any] | None = None
    training_intensity: float | None = None
    num_steps_sampled_before_learning_starts: int = 0
    checkpoint_replay_buffer: bool = False
    batch_size_B: int | None = None
    batch_length_T: int | None = None
    training_ratio: float | None = None
    # Offline data (input_: Parquet paths, or in-memory TensorDicts / a replay buffer).
    input_: Any = None
    input_read_method: str = "auto"
    input_memory_budget_mb: float = 1024.0
    input_shuffle_buffer_size: int = 100_000
    dataset_num_iters_per_learner: int = 100

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> SamplingSettings:
        """The settings found in ``hparams`` (an algorithm's hyperparameters); the rest default."""
        return cls(**{name: hparams[name] for name in cls.names() if name in hparams})

    def with_overrides(self, overrides: Mapping[str, Any]) -> SamplingSettings:
        """These settings with ``overrides`` on top; an unknown name is one clear error."""
        if not overrides:
            return self
        names = self.names()
        for name in overrides:
            if name not in names:
                raise ConfigError(unknown_name_message("DataModule setting", str(name), names))
        return dataclasses.replace(self, **overrides)


@runtime_checkable
class ExperienceSource(Protocol):
    """What every DataModule samples for (an algorithm implements it; see the module docstring)."""

    #: Whether batches are ``{policy_id: TensorDict}`` (multi-agent) or one TensorDict.
    is_multi_agent: bool
    #: The policies being learned (replay keeps one buffer per policy id).
    policy_ids: list[str]
    #: Seeds minibatch shuffles; checkpoints carry its state.
    minibatch_generator: torch.Generator

    @property
    def device(self) -> torch.device:
        """Where post-processed batches and minibatches go."""

    @property
    def weights_version(self) -> int:
        """Monotonic version of the weights (optimizer steps taken); async sampling broadcasts by it."""

    def sampling_settings(self) -> SamplingSettings:
        """The settings, read when needed (a DataModule's overrides go on top)."""

    def env_runner_spec(self, num_envs: int, evaluation: bool = False, seed_offset: int = 0) -> Any:
        """The spec every runner of a training (or evaluation) group is built from."""

    def env_runner_placement_kwargs(self, evaluation: bool = False) -> dict[str, Any]:
        """``EnvRunnerPlacement`` kwargs of the training (or evaluation) runners."""

    def fault_tolerance_config(self) -> FaultToleranceConfig:
        """How a runner group handles failed or hung runners."""

    def policy_state(self) -> dict[str, Any]:
        """What every runner loads before sampling: weights, extras, connector state per policy."""

    def merge_connector_deltas(self, deltas: Sequence[dict[str, Sequence[dict[str, Any] | None]]]) -> None:
        """Fold the runners' connector statistics (one ``{policy_id: deltas}`` per runner) in."""

    def process_rollout(self, batch: Any) -> Any:
        """Post-process one sampled batch (learner connectors, then GAE, V-trace, n-step ...)."""

    def sequence_length(self) -> int | None:
        """Length of the sequences a recurrent model learns from, else None."""


@runtime_checkable
class OfflineExperienceSource(ExperienceSource, Protocol):
    """What the offline DataModule needs on top: the data's columns and the policy's connectors
    (offline rows pass through the same env-to-module pipeline as sampled ones)."""

    env_to_module_pipelines: dict[str, EnvToModulePipeline]
    module_to_env_specs: dict[str, list[dict[str, Any]]]
    #: The global connector state; the offline DataModule publishes its pipeline's state here.
    connector_state: dict[str, list[dict[str, Any]]]

    def offline_requirements(self) -> OfflineRequirements:
        """Which columns beyond observation and action the losses need."""

    def policy_env_spaces(self, policy_id: str) -> tuple[spaces.Space, spaces.Space]:
        """Env-side observation and action space of one policy."""


def only_policy_id(source: ExperienceSource) -> str:
    """The single policy id of a single-agent source (one clear error otherwise)."""
    if len(source.policy_ids) != 1:
        raise ConfigError(f"This DataModule serves one policy; the algorithm has {list(source.policy_ids)}.")
    return source.policy_ids[0]
