"""Glue between an algorithm's ``external=`` setting and the runner group."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_rl.external_server.runner import ExternalEnvRunnerSpec

if TYPE_CHECKING:
    from lightning_rl.algorithms.base import Algorithm
    from lightning_rl.envs.external.config import ExternalEnvConfig


def external_runner_spec(
    algorithm: Algorithm, config: ExternalEnvConfig, num_envs: int, seed: int | None
) -> ExternalEnvRunnerSpec:
    """The training runners' spec when experience comes from external clients."""
    policy_id = algorithm.policy_ids[0]
    observation_space, action_space = algorithm.policy_env_spaces(policy_id)
    timeout = algorithm.hparams.sample_timeout_s
    return ExternalEnvRunnerSpec(
        observation_space=observation_space,
        action_space=action_space,
        policy_spec=algorithm.policies[policy_id].policy_spec(),
        external=config.to_dict(with_token=True),
        env_to_module=list(algorithm.hparams.env_to_module_connector),
        module_to_env=list(algorithm.module_to_env_specs[policy_id]),
        num_envs=num_envs,
        seed=seed,
        policy_id=policy_id,
        sample_timeout_s=None if timeout is None else float(timeout),
        initial_state=algorithm.policy_state(),
    )


def server_addresses(source: Any) -> list[tuple[str, int]]:
    """``(host, port)`` of every training server of a TrainingRun, algorithm, DataModule or runner group."""
    if hasattr(source, "train_group"):  # an ExperienceDataModule
        group = source.train_group
    elif hasattr(getattr(source, "datamodule", None), "train_group"):  # a TrainingRun
        group = source.datamodule.train_group
    elif hasattr(source, "experience"):  # an Algorithm
        group = source.experience.train_group
    else:
        group = source
    if group is None:
        raise RuntimeError("The external env servers start with training (trainer.fit / TrainingRun.train).")
    if group.local_runner is not None:
        return [group.local_runner.get_address()]
    import ray

    return [tuple(ray.get(actor.get_address.remote())) for actor in group.actors() if actor is not None]
