"""The policies of one algorithm: their spaces, connector pipelines, connector state and mapping.

An algorithm learns one network module per policy id (single-agent: just ``"default_policy"``).
Everything about those policies that is not a network lives here: the env-side spaces probed
from the env, the env-to-module pipeline (and the module-side spaces it produces), the
module-to-env connector specs, the global connector state (observation filter statistics) the
runners sync to, which agent maps to which policy, and which policies were added after
construction (self-play snapshots, which checkpoints must re-create).

It is an object the :class:`~lightning_rl.algorithms.base.Algorithm` holds rather than a mixin:
it has no Lightning hooks and no networks, so it can be built, read and tested without a
LightningModule. The algorithm's public policy API over it is
:class:`~lightning_rl.algorithms.algorithm_policies.AlgorithmPolicies`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from gymnasium import spaces

from lightning_rl.algorithms.multi_agent import (
    RANDOM_POLICY,
    policy_spaces_from_env,
    resolve_mapping_fn,
)
from lightning_rl.connectors.base import (
    EnvToModulePipeline,
    ModuleToEnvPipeline,
    build_connector,
    check_seam,
    env_connector_factory_args,
    learner_connector_factory_args,
    normalize_connector_specs,
)
from lightning_rl.connectors.module_to_env import default_module_to_env
from lightning_rl.constants import DEFAULT_POLICY_ID
from lightning_rl.env_runners.multi_agent_env_runner import MultiAgentPolicySetup
from lightning_rl.envs.multi_agent import is_multi_agent
from lightning_rl.envs.registration import EnvContext
from lightning_rl.errors import CheckpointError, ConfigError, EnvError
from lightning_rl.modules.model_config import resolve_model_config
from lightning_rl.modules.policy_networks import PolicySpec


@dataclass
class EnvProbe:
    """What one env copy built at construction tells: whether it is multi-agent and its spaces.

    ``env`` is kept (closed) only until the connector factories ran: RLlib passes the env to
    connector lambdas, and multi-agent envs answer per-agent space questions after ``close``.
    """

    is_multi_agent: bool
    observation_space: spaces.Space | None
    action_space: spaces.Space | None
    env: Any


def probe_env(env_creator: Any, env_config: dict | None) -> EnvProbe:
    """Build one env copy, read its spaces, close it."""
    env = env_creator(EnvContext(env_config, worker_index=0))
    if is_multi_agent(env):
        env.close()
        return EnvProbe(True, None, None, env)
    try:
        observation_space = getattr(env, "observation_space", None)
        action_space = getattr(env, "action_space", None)
        if not isinstance(observation_space, spaces.Space) or not isinstance(action_space, spaces.Space):
            raise EnvError(
                f"Env {env_creator.name!r} has no gymnasium observation_space/action_space "
                f"(got {observation_space!r}, {action_space!r})."
            )
        return EnvProbe(False, observation_space, action_space, env)
    finally:
        close = getattr(env, "close", None)
        if close is not None:
            close()


def with_prev_action_reward(e2m_specs: list[dict], model_config: Any) -> list[dict]:
    """RLlib's ``lstm_use_prev_action/reward`` = the PrevActionsPrevRewards connector."""
    config = resolve_model_config(model_config)
    wanted = config.lstm_use_prev_action or config.lstm_use_prev_reward
    present = any(
        spec["name"].rsplit(".", 1)[-1].rsplit(":", 1)[-1].lower() == "prevactionsprevrewards"
        for spec in e2m_specs
    )
    if not wanted or present:
        return e2m_specs
    return [
        *e2m_specs,
        {
            "name": "PrevActionsPrevRewards",
            "config": {
                "n_prev_actions": int(config.lstm_use_prev_action),
                "n_prev_rewards": int(config.lstm_use_prev_reward),
            },
        },
    ]


def connector_specs(
    probe: EnvProbe, env_to_module: Any, module_to_env: Any, learner: Any, model_config: Any
) -> tuple[list[dict], list[dict], list[dict]]:
    """The three connector settings as plain specs: env-to-module (plus the previous-action/reward
    connector memory models ask for), module-to-env and learner. Factories run now and get what
    RLlib passes them: (env, spaces, device) or (obs_space, act_space)."""
    env_args = env_connector_factory_args(probe.env)
    e2m_specs = normalize_connector_specs(env_to_module, factory_args=env_args)
    m2e_specs = normalize_connector_specs(module_to_env, factory_args=env_args)
    learner_args = learner_connector_factory_args(e2m_specs, probe.observation_space, probe.action_space)
    learner_specs = normalize_connector_specs(learner, factory_args=learner_args)
    return with_prev_action_reward(e2m_specs, model_config), m2e_specs, learner_specs


def build_learner_connectors(specs: Sequence[dict], policy_spaces: tuple[spaces.Space, spaces.Space]) -> list:
    """One policy's learner connectors, set up for its module-side spaces."""
    connectors = [build_connector(spec) for spec in specs]
    check_seam(connectors, "learner")
    for connector in connectors:
        if not hasattr(connector, "setup") or not callable(connector):
            raise ConfigError(f"{connector!r} is not a learner connector.")
        connector.setup(*policy_spaces)
    return connectors


class PolicySet:
    """Per policy id: spaces, pipelines and connector state; plus the agent -> policy mapping.

    Args:
        probe: the probed env (its spaces; multi-agent envs map agents to policies here).
        settings: ``{policy_id: None | "random" | {spaces}}`` (:func:`~.multi_agent.normalize_policies`).
        mapping_fn, stored_mapping: the resolved ``policy_mapping_fn`` and its stored form
            (:func:`~.multi_agent.resolve_mapping_fn`; a single-agent env takes none).
        env_to_module, module_to_env: the users' connector specs (the defaults that unsquash or
            clip actions are appended per policy).
        normalize_actions, clip_actions: how Box actions reach the env.
        env_name: the env's name, for errors.
    """

    def __init__(
        self,
        probe: EnvProbe,
        settings: dict[str, Any],
        mapping_fn: Callable[..., str],
        stored_mapping: Any,
        env_to_module: list[dict],
        module_to_env: list[dict],
        *,
        normalize_actions: bool,
        clip_actions: bool,
        env_name: str,
    ) -> None:
        self.settings = settings
        self.mapping_fn = mapping_fn
        self.is_multi_agent = probe.is_multi_agent
        self.env_to_module = list(env_to_module)
        self.module_to_env = list(module_to_env)
        self.normalize_actions, self.clip_actions = normalize_actions, clip_actions
        if probe.is_multi_agent:
            env_spaces, self.agent_policies = policy_spaces_from_env(
                probe.env, self.settings, self.mapping_fn
            )
        else:
            if list(self.settings) != [DEFAULT_POLICY_ID] or stored_mapping is not None:
                raise ConfigError(
                    f"policies/policy_mapping_fn need a MultiAgentEnv, but env {env_name!r} is a "
                    "single-agent gymnasium env."
                )
            env_spaces = {DEFAULT_POLICY_ID: (probe.observation_space, probe.action_space)}
            self.agent_policies: dict[Hashable, str] = {}
        self.policy_ids: list[str] = []
        self.env_policy_spaces: dict[str, tuple[spaces.Space, spaces.Space]] = {}
        self.env_to_module_pipelines: dict[str, EnvToModulePipeline] = {}
        self.module_to_env_specs: dict[str, list[dict]] = {}
        self.policy_spaces: dict[str, tuple[spaces.Space, spaces.Space]] = {}
        self.connector_state: dict[str, list[dict[str, Any]]] = {}
        # Policies added after construction: {policy_id: {"from_policy": ..., "trainable": ...}}.
        self.added: dict[str, dict[str, Any]] = {}
        for policy_id, (obs_space, action_space) in env_spaces.items():
            self._add_spaces(policy_id, obs_space, action_space)

    def _add_spaces(self, policy_id: str, obs_space: spaces.Space, action_space: spaces.Space) -> None:
        pipeline = EnvToModulePipeline.from_specs(self.env_to_module, obs_space, action_space)
        module_to_env_specs = self.module_to_env + default_module_to_env(
            action_space, self.normalize_actions, self.clip_actions
        )
        module_to_env = ModuleToEnvPipeline.from_specs(module_to_env_specs, action_space)
        self.policy_ids.append(policy_id)
        self.env_policy_spaces[policy_id] = (obs_space, action_space)
        self.env_to_module_pipelines[policy_id] = pipeline
        self.module_to_env_specs[policy_id] = module_to_env_specs
        self.policy_spaces[policy_id] = (pipeline.output_space, module_to_env.module_action_space)
        self.connector_state[policy_id] = pipeline.get_state()

    def add_copy(self, policy_id: str, from_policy: str, trainable: bool) -> None:
        """Add ``policy_id`` with ``from_policy``'s spaces, connectors and connector state."""
        if policy_id in self.env_policy_spaces:
            raise ConfigError(f"Policy {policy_id!r} exists already; the policies are {self.policy_ids}.")
        if from_policy not in self.env_policy_spaces:
            raise ConfigError(f"Unknown policy {from_policy!r} to copy; the policies are {self.policy_ids}.")
        self._add_spaces(policy_id, *self.env_policy_spaces[from_policy])
        self.settings[policy_id] = self.settings.get(from_policy)
        self.connector_state[policy_id] = copy.deepcopy(self.connector_state[from_policy])
        self.env_to_module_pipelines[policy_id].set_state(self.connector_state[policy_id])
        self.added[policy_id] = {"from_policy": from_policy, "trainable": trainable}

    def remove_added(self, policy_id: str) -> None:
        """Forget a policy added after construction (a league member RLlib's ``remove_module``
        drops); the configured policies stay, since checkpoints and hyperparameters name them."""
        if policy_id not in self.added:
            raise ConfigError(
                f"Only modules added during the run can be removed; {policy_id!r} is not one of them "
                f"(added: {sorted(self.added)}; all policies: {self.policy_ids})."
            )
        del self.added[policy_id]
        self.policy_ids.remove(policy_id)
        for table in (
            self.env_policy_spaces,
            self.env_to_module_pipelines,
            self.module_to_env_specs,
            self.policy_spaces,
            self.connector_state,
            self.settings,
        ):
            table.pop(policy_id, None)

    def set_mapping_fn(self, fn: Any) -> None:
        """Change which agent uses which policy (from the runners' next sample on)."""
        self.mapping_fn, _ = resolve_mapping_fn(fn, self.policy_ids)

    def single_policy_id(self) -> str:
        if len(self.policy_ids) != 1:
            raise ConfigError(
                f"This algorithm has several policies ({self.policy_ids}); use policy_spaces[policy_id] "
                "and policies[policy_id]."
            )
        return self.policy_ids[0]

    def runner_setup(self, policy_id: str, policy_spec: PolicySpec) -> MultiAgentPolicySetup:
        """What a multi-agent runner needs to run ``policy_id`` (its module's ``policy_spec``)."""
        obs_space, action_space = self.env_policy_spaces[policy_id]
        return MultiAgentPolicySetup(
            policy_spec=policy_spec,
            observation_space=obs_space,
            action_space=action_space,
            env_to_module=list(self.env_to_module),
            module_to_env=list(self.module_to_env_specs[policy_id]),
        )

    def merge_connector_deltas(self, deltas: Sequence[dict[str, Sequence[dict[str, Any] | None]]]) -> None:
        """Fold what the runners' filters saw (``{policy_id: deltas}`` per runner) into the global state."""
        for policy_id, pipeline in self.env_to_module_pipelines.items():
            per_runner = [d[policy_id] for d in deltas if policy_id in d]
            if per_runner:
                self.connector_state[policy_id] = pipeline.merge_deltas(
                    self.connector_state[policy_id], per_runner
                )
                pipeline.set_state(self.connector_state[policy_id])

    def restore_connector_state(self, state: dict[str, list[dict[str, Any]]]) -> None:
        """Load connector state read from a checkpoint; unknown policy ids are an error."""
        unknown = set(state) - set(self.env_to_module_pipelines)
        if unknown:
            raise CheckpointError(
                f"The checkpoint has connector state for policies {sorted(unknown)}, but this algorithm "
                f"has policies {self.policy_ids}."
            )
        for policy_id, policy_state in state.items():
            self.env_to_module_pipelines[policy_id].set_state(policy_state)
            self.connector_state[policy_id] = policy_state


def storable_policies(policies: Any, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The ``policies`` setting as hyperparameters store it: ids with None or ``"random"``
    (spaces given as objects are not plain data; the env gives them again on restore)."""
    if policies is None:
        return None
    return {k: v if v in (None, RANDOM_POLICY) else None for k, v in settings.items()}
