"""The algorithm's side of the data interface: what a DataModule calls to sample for it.

:class:`~lightning_rl.data.source.ExperienceSource` (in the data layer) says what a DataModule
needs; :class:`ExperienceSourceMethods` is how every algorithm provides it: the typed sampling
settings, runner specs, the policy state to broadcast, connector-delta merging and the rollout
post-processing hook (learner connectors, then the module's GAE, V-trace, n-step ...). It is a
mixin because these are the algorithm's public methods (runners, self-play, recording and tests
call them on the algorithm); the work is done by :mod:`.runner_specs` and the
:class:`~.policy_set.PolicySet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_rl.algorithms import runner_specs
from lightning_rl.algorithms.policy_set import PolicySet
from lightning_rl.algorithms.reward_clipping import clip_batch_rewards
from lightning_rl.data.experience import ExperienceDataModule
from lightning_rl.data.source import SamplingSettings
from lightning_rl.env_runners.env_runner_group import FaultToleranceConfig
from lightning_rl.modules.recurrent import is_recurrent


class ExperienceSourceMethods:
    """Implements :class:`~lightning_rl.data.source.ExperienceSource` for an algorithm, and
    hands the algorithm to the DataModule it builds for itself (when ``trainer.fit`` got none)."""

    policy_set: PolicySet
    datamodule_class: type[ExperienceDataModule]
    _default_datamodule: ExperienceDataModule | None
    _pending_datamodule_state: dict[str, Any] | None

    def configure_datamodule(self) -> ExperienceDataModule:
        """The DataModule this algorithm uses when ``trainer.fit`` gets none."""
        return self.datamodule_class()

    @property
    def experience(self) -> ExperienceDataModule:
        """The DataModule serving this algorithm (the Trainer's, or the algorithm's own)."""
        trainer = self._trainer
        if trainer is not None and isinstance(trainer.datamodule, ExperienceDataModule):
            return trainer.datamodule
        if self._default_datamodule is None:
            self._default_datamodule = self.configure_datamodule()
            self._default_datamodule.attach(self)
            if self._pending_datamodule_state is not None:
                self._default_datamodule.load_state_dict(self._pending_datamodule_state)
                self._pending_datamodule_state = None
        return self._default_datamodule

    def _owns_datamodule(self) -> bool:
        trainer = self._trainer
        return trainer is None or not isinstance(trainer.datamodule, ExperienceDataModule)

    @property
    def num_env_steps_sampled_lifetime(self) -> int:
        return self.experience.num_env_steps_sampled_lifetime

    @property
    def weights_version(self) -> int:
        """Monotonic version of the weights: the number of optimizer steps taken."""
        return int(self.global_step) if self._trainer is not None else 0

    def sampling_settings(self) -> SamplingSettings:
        """The settings the DataModule reads, typed, from the hyperparameters (the evaluation
        function as resolved, since a lambda has no stored form)."""
        evaluation_fn = getattr(self, "custom_evaluation_function", None)
        return SamplingSettings.from_hparams({**self.hparams, "custom_evaluation_function": evaluation_fn})

    def policy_state(self) -> dict[str, Any]:
        """What every EnvRunner loads before sampling: weights, extras and connector state per policy."""
        state = {
            "version": self.weights_version,
            "policies": {
                policy_id: {
                    "weights": {k: v.detach().to("cpu") for k, v in module.policy_weights().items()},
                    "extra": self.policy_extra(policy_id),
                }
                for policy_id, module in self.policies.items()
            },
            "connectors": self.policy_set.connector_state,
        }
        if self.policy_set.is_multi_agent:
            state["policy_mapping_fn"] = self.policy_set.mapping_fn
            state["new_policies"] = {
                pid: self.policy_set.runner_setup(pid, self.policies[pid].policy_spec())
                for pid in self.policy_set.added
            }
        return state

    def env_runner_spec(self, num_envs: int, evaluation: bool = False, seed_offset: int = 0) -> Any:
        """The spec of the training (or evaluation) runners; see :mod:`.runner_specs`."""
        return runner_specs.build_env_runner_spec(
            self.hparams,
            env_creator=self.env_creator,
            policy_set=self.policy_set,
            policies=self.policies,
            external=self._external,
            initial_state=self.policy_state,
            num_envs=num_envs,
            evaluation=evaluation,
            seed_offset=seed_offset,
            callbacks=self.rllib_callbacks,
        )

    def env_runner_placement_kwargs(self, evaluation: bool = False) -> dict[str, Any]:
        """``EnvRunnerPlacement`` kwargs of the training (or evaluation) runners."""
        return runner_specs.placement_kwargs(self.hparams, evaluation)

    def fault_tolerance_config(self) -> FaultToleranceConfig:
        return runner_specs.fault_tolerance_config(self.hparams)

    def merge_connector_deltas(self, deltas: Sequence[dict[str, Sequence[dict[str, Any] | None]]]) -> None:
        """Fold what the runners' filters saw (``{policy_id: deltas}`` per runner) into the global state."""
        self.policy_set.merge_connector_deltas(deltas)

    def process_rollout(self, batch: Any) -> Any:
        """Run each policy's learner connectors, then its module's own (GAE ...), on its batch."""
        if isinstance(batch, dict):
            # A module removed mid-episode (remove_module) may still send its last steps: dropped.
            return {
                pid: self.policies[pid].process_rollout(self._apply_learner_connectors(pid, b))
                for pid, b in batch.items()
                if pid in self.policies
            }
        policy_id = self.policy_set.single_policy_id()
        return self.policies[policy_id].process_rollout(self._apply_learner_connectors(policy_id, batch))

    def _apply_learner_connectors(self, policy_id: str, batch: Any) -> Any:
        batch = clip_batch_rewards(batch, self.hparams.get("clip_rewards"))  # RLlib's clip_rewards
        connectors = self.learner_connectors.get(policy_id, [])
        for connector in connectors:
            batch = connector(batch)
        if connectors and ("next", "intrinsic_reward") in batch.keys(include_nested=True):
            self.accumulate_learner_metrics(
                {"intrinsic_reward_mean": batch["next", "intrinsic_reward"].mean()}, policy_id
            )
        return batch

    def sequence_length(self) -> int | None:
        """Length of the sequences a recurrent model learns from (``max_seq_len``), else None."""
        return int(self.model_config.max_seq_len) if is_recurrent(self.model_config) else None
