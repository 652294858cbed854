"""From an algorithm's settings and policies to what the EnvRunner groups are built from.

The runner spec (plain picklable data sent once to each runner: env creator, policy recipe,
connectors, seed, robustness settings), where the runners run (placement) and how their group
handles failures (fault tolerance). Plain functions over the hyperparameters and the
:class:`~lightning_rl.algorithms.policy_set.PolicySet`: nothing here needs the LightningModule,
and the DataModule reaches them only through the algorithm's ``ExperienceSource`` methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_rl.algorithms.policy_set import PolicySet
from lightning_rl.env_runners.env_runner import EnvRunnerSpec
from lightning_rl.env_runners.env_runner_group import FaultToleranceConfig
from lightning_rl.env_runners.multi_agent_env_runner import MultiAgentEnvRunnerSpec
from lightning_rl.envs.external.config import ExternalEnvConfig
from lightning_rl.external_server.runner import ExternalEnvRunnerSpec
from lightning_rl.offline.recorder import recording_spec

# Evaluation runners are seeded apart from training runners (their episodes differ).
EVALUATION_SEED_OFFSET = 500_000


def placement_kwargs(h: Mapping[str, Any], evaluation: bool = False) -> dict[str, Any]:
    """:class:`~lightning_rl.env_runners.env_runner_group.EnvRunnerPlacement` kwargs of the
    training (or evaluation) runners; evaluation settings left None fall back to training's."""

    def pick(name: str) -> Any:
        own = h.get(f"evaluation_{name}") if evaluation else None
        return own if own is not None else h.get(name)

    return {
        "num_cpus": pick("num_cpus_per_env_runner"),
        "num_gpus": pick("num_gpus_per_env_runner") or 0.0,
        "custom_resources": dict(pick("custom_resources_per_env_runner") or {}),
        "scheduling_strategy": h.get("env_runner_scheduling_strategy"),
        "label_selector": h.get("env_runner_label_selector"),
        "placement_strategy": h.get("placement_strategy"),
    }


def fault_tolerance_config(h: Mapping[str, Any]) -> FaultToleranceConfig:
    """The runner group's failure handling (``.get`` for settings older checkpoints lack)."""
    return FaultToleranceConfig(
        restart_failed_env_runners=h["restart_failed_env_runners"],
        max_num_env_runner_restarts=h["max_num_env_runner_restarts"],
        sample_timeout_s=h["sample_timeout_s"],
        ignore_env_runner_failures=h["ignore_env_runner_failures"],
        max_consecutive_env_runner_failures=h["max_consecutive_env_runner_failures"],
        min_healthy_env_runners=h.get("min_healthy_env_runners"),
        env_runner_health_probe_timeout_s=h.get("env_runner_health_probe_timeout_s", 30.0),
        env_runner_hung_timeout_s=h.get("env_runner_hung_timeout_s"),
    )


def env_robustness_settings(h: Mapping[str, Any]) -> dict[str, Any]:
    """What runners do with crashing, hanging or NaN-producing env copies."""
    return {
        "restart_failed_sub_environments": bool(h["restart_failed_sub_environments"]),
        "max_consecutive_sub_environment_failures": int(h["max_consecutive_env_runner_failures"]),
        "on_non_finite_env_output": h["on_non_finite_env_output"],
        "sample_timeout_s": h["sample_timeout_s"],
    }


def runner_env_config(h: Mapping[str, Any], evaluation: bool) -> dict[str, Any]:
    """``env_config``, with ``evaluation_env_config``'s entries on top for evaluation runners."""
    config = dict(h["env_config"])
    if evaluation and h.get("evaluation_env_config"):
        config.update(h["evaluation_env_config"])
    return config


def build_env_runner_spec(
    h: Mapping[str, Any],
    *,
    env_creator: Any,
    policy_set: PolicySet,
    policies: Mapping[str, Any],
    external: ExternalEnvConfig | None,
    initial_state: Any,
    num_envs: int,
    evaluation: bool = False,
    seed_offset: int = 0,
    callbacks: Any = None,
) -> Any:
    """The spec of one training (or evaluation) runner of ``num_envs`` env copies.

    ``policies`` maps policy ids to modules with a ``policy_spec()``; ``initial_state`` (a
    callable returning the algorithm's ``policy_state()``) is called only for external-env
    runners, whose servers answer clients before the first weight broadcast.
    ``callbacks`` (RLlib callbacks, a ``CallbackSettings``) go to the training runners.
    """
    seed = h["seed"]
    if seed is not None:
        seed = int(seed) + seed_offset + (EVALUATION_SEED_OFFSET if evaluation else 0)
    if policy_set.is_multi_agent:
        return MultiAgentEnvRunnerSpec(
            env_creator=env_creator,
            policies={
                pid: policy_set.runner_setup(pid, policies[pid].policy_spec())
                for pid in policy_set.policy_ids
            },
            policy_mapping_fn=policy_set.mapping_fn,
            env_config=runner_env_config(h, evaluation),
            num_envs=num_envs,
            seed=seed,
            update_connectors=not evaluation,
            callbacks=None if evaluation else callbacks,
            **env_robustness_settings(h),
        )
    policy_id = policy_set.single_policy_id()
    if external is not None and not evaluation:
        timeout = h["sample_timeout_s"]
        return ExternalEnvRunnerSpec(
            observation_space=policy_set.env_policy_spaces[policy_id][0],
            action_space=policy_set.env_policy_spaces[policy_id][1],
            policy_spec=policies[policy_id].policy_spec(),
            external=external.to_dict(with_token=True),
            env_to_module=list(policy_set.env_to_module),
            module_to_env=list(policy_set.module_to_env_specs[policy_id]),
            num_envs=num_envs,
            seed=seed,
            policy_id=policy_id,
            sample_timeout_s=None if timeout is None else float(timeout),
            initial_state=initial_state(),
        )
    return EnvRunnerSpec(
        env_creator=env_creator,
        policy_spec=policies[policy_id].policy_spec(),
        env_config=runner_env_config(h, evaluation),
        num_envs=num_envs,
        env_to_module=list(policy_set.env_to_module),
        module_to_env=list(policy_set.module_to_env_specs[policy_id]),
        seed=seed,
        update_connectors=not evaluation,
        policy_id=policy_id,
        recorder=None
        if evaluation
        else recording_spec(h["output"], h["output_config"], h["env"] if isinstance(h["env"], str) else None),
        callbacks=None if evaluation else callbacks,
        **env_robustness_settings(h),
    )
