"""Multi-agent plumbing of algorithms: policy ids, the mapping from agents to policies, spaces.

RLlib's ``config.multi_agent(policies=..., policy_mapping_fn=..., policies_to_train=...)``:

* ``policies``: a set/list of policy ids, or a dict ``{policy_id: None | "random" | {...}}``;
  ``"random"`` is a built-in frozen policy acting uniformly over the legal actions, and a
  dict may give ``observation_space``/``action_space`` for a policy no agent maps to yet;
* ``policy_mapping_fn(agent_id, episode, **kwargs) -> policy_id``: called once per agent per
  episode (a dict ``{agent_id: policy_id}`` or an import path also works); ``episode.id_``
  is the episode's id (RLlib's name; ``episode.id`` is an alias). Only when the agents'
  spaces differ is it also called at build time, with ``episode=None``, as in RLlib;
* ``policies_to_train``: the policies whose losses are optimised (default: all but frozen).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces

from lightning_rl._imports import import_object, object_path
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.constants import DEFAULT_POLICY_ID
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.modules.policy_networks import (
    InferencePolicy,
    PolicySpec,
    apply_action_mask,
    observation_key,
    split_action_mask,
)

RANDOM_POLICY = "random"


class DictMapping:
    """``{agent_id: policy_id}`` as a picklable mapping function."""

    def __init__(self, mapping: dict[Hashable, str]) -> None:
        self.mapping = dict(mapping)

    def to_config(self) -> dict[str, Any]:
        return {str(k): v for k, v in self.mapping.items()}

    def __call__(self, agent_id: Hashable, episode: Any = None, **kwargs: Any) -> str:
        try:
            return self.mapping[agent_id]
        except KeyError:
            try:
                return self.mapping[str(agent_id)]
            except KeyError:
                raise ConfigError(
                    f"policy_mapping_fn has no policy for agent {agent_id!r}; it maps {list(self.mapping)}."
                ) from None


class ConstantMapping:
    """Every agent to one policy (RLlib's default: a shared ``default_policy``)."""

    def __init__(self, policy_id: str) -> None:
        self.policy_id = policy_id

    def to_config(self) -> dict[str, Any]:
        return {"class_path": f"{__name__}.ConstantMapping", "init_args": {"policy_id": self.policy_id}}

    def __call__(self, agent_id: Hashable, episode: Any = None, **kwargs: Any) -> str:
        return self.policy_id


def normalize_policies(policies: Any) -> dict[str, Any]:
    """``{"p0", "p1"}`` / ``["p0"]`` / ``{"p0": None}`` -> ``{policy_id: setting or None}``."""
    if policies is None:
        return {DEFAULT_POLICY_ID: None}
    if isinstance(policies, dict):
        return {str(k): v for k, v in policies.items()}
    if isinstance(policies, str):
        return {policies: None}
    try:
        return {str(p): None for p in sorted(policies, key=str)}
    except TypeError:
        raise ConfigError(f"policies must be a set, list or dict of policy ids, got {policies!r}") from None


def _is_mapping_class(obj: Any) -> bool:
    """What a checkpoint may name as a mapping class: one of ours that stores itself as config."""
    in_package = str(getattr(obj, "__module__", "")).startswith("lightning_rl.")
    return isinstance(obj, type) and in_package and hasattr(obj, "to_config")


def resolve_mapping_fn(value: Any, policy_ids: list[str]) -> tuple[Callable[..., str], str | dict | None]:
    """The callable to use and the plain value to store in hyperparameters.

    Plain forms survive checkpoints and YAML: a dict ``{agent_id: policy_id}``, an import path,
    or ``{"class_path": ..., "init_args": {...}}`` for a mapping class (objects with a
    ``to_config()`` method, such as :class:`~lightning_rl.self_play.Matchmaking`, store
    themselves that way). A lambda works too but must be passed again when restoring.
    """
    if isinstance(value, dict) and "class_path" in value:
        try:
            cls = import_object(value["class_path"], kind="policy_mapping_fn class", accept=_is_mapping_class)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"Cannot import policy_mapping_fn class {value['class_path']!r}: {exc}"
            ) from exc
        fn = cls(**value.get("init_args", {}))
        return fn, fn.to_config() if hasattr(fn, "to_config") else dict(value)
    if hasattr(value, "to_config") and callable(value):
        return value, value.to_config()
    if value is None:
        if len(policy_ids) != 1:
            raise ConfigError(
                f"Several policies {policy_ids} need a policy_mapping_fn(agent_id, episode, **kwargs) "
                "that says "
                "which policy each agent uses."
            )
        return ConstantMapping(policy_ids[0]), None
    if isinstance(value, dict):
        return DictMapping(value), {str(k): v for k, v in value.items()}
    if isinstance(value, str):
        try:
            fn = import_object(value, kind="policy_mapping_fn")
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"Cannot import policy_mapping_fn {value!r}: {exc}") from exc
        return fn, value
    if callable(value):
        # Lambdas cannot be stored: keep None in hyperparameters, and the callable itself.
        return value, object_path(value)
    raise ConfigError(f"policy_mapping_fn must be a callable, a dict or an import path, got {value!r}")


def policy_spaces_from_env(
    env: Any, policies: dict[str, Any], mapping_fn: Callable[..., str]
) -> tuple[dict[str, tuple[gym.Space, gym.Space]], dict[Hashable, str]]:
    """Env-side (observation, action) spaces per policy, and the build-time agent -> policy map.

    As in RLlib, the mapping function is called here (with ``episode=None``) only when the
    agents' spaces differ: when every agent has the same spaces, every policy gets them and
    the mapping function first runs with a real episode in the EnvRunners (so mappings that
    read ``episode.id_``, like RLlib's self-play examples, work). The map is then empty.
    """
    agent_spaces = {
        agent_id: (env.get_observation_space(agent_id), env.get_action_space(agent_id))
        for agent_id in env.possible_agents
    }
    shared: list[tuple[gym.Space, gym.Space]] = []
    for pair in agent_spaces.values():
        if pair not in shared:
            shared.append(pair)
    agent_policy: dict[Hashable, str] = {}
    found: dict[str, tuple[gym.Space, gym.Space, Hashable]] = {}
    if len(shared) > 1:
        for agent_id, (obs_space, act_space) in agent_spaces.items():
            policy_id = mapping_fn(agent_id, None, worker=None)
            if policy_id not in policies:
                raise ConfigError(
                    f"policy_mapping_fn maps agent {agent_id!r} to {policy_id!r}, which is not one of the "
                    f"policies {sorted(policies)}."
                )
            agent_policy[agent_id] = policy_id
            if policy_id in found:
                first_obs, first_act, first_agent = found[policy_id]
                if first_obs != obs_space or first_act != act_space:
                    raise SpaceError(
                        f"Agents {first_agent!r} and {agent_id!r} both map to policy {policy_id!r} but "
                        f"have different spaces ({first_obs}, {first_act}) and ({obs_space}, {act_space})."
                    )
            else:
                found[policy_id] = (obs_space, act_space, agent_id)
    result: dict[str, tuple[gym.Space, gym.Space]] = {}
    for policy_id, setting in policies.items():
        if isinstance(setting, dict) and "observation_space" in setting:
            result[policy_id] = (setting["observation_space"], setting["action_space"])
        elif policy_id in found:
            result[policy_id] = found[policy_id][:2]
        elif len(shared) == 1:
            result[policy_id] = shared[0]  # every agent has these spaces (a symmetric game)
        else:
            raise ConfigError(
                f"No agent maps to policy {policy_id!r} at the start, and the agents' spaces differ; "
                "give its spaces: policies={..., "
                + repr(policy_id)
                + ": {'observation_space': ..., 'action_space': ...}}."
            )
    return result, agent_policy


class RandomPolicy(InferencePolicy):
    """Uniform random actions; only legal ones when the observation carries an action mask."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        super().__init__()
        self.obs_key = observation_key(observation_space)
        _, self.masked = split_action_mask(observation_space)
        self.action_space = action_space

    def forward(self, obs, explore=True, generator=None):
        batch = (obs[self.obs_key] if self.masked else obs).shape[0]
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            logits = torch.zeros(batch, int(space.n))
            if self.masked:
                logits = apply_action_mask(logits, obs)
            probs = torch.softmax(logits, -1)
            action = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            return {
                "action": action,
                "action_log_prob": torch.log(probs.gather(-1, action[:, None])).squeeze(-1),
            }
        if isinstance(space, spaces.Box):
            low = torch.as_tensor(space.low, dtype=torch.float32)
            high = torch.as_tensor(space.high, dtype=torch.float32)
            u = torch.rand((batch, *space.shape), generator=generator)
            return {"action": low + u * (high - low), "action_log_prob": torch.zeros(batch)}
        raise SpaceError(f"RandomPolicy supports Discrete and Box actions, got {space}")

    def load_weights(self, weights):
        """Nothing to load."""


class RandomPolicyModule(PolicyModule):
    """A frozen policy with no parameters, acting with :class:`RandomPolicy`."""

    trainable = False

    def policy_spec(self) -> PolicySpec:
        return PolicySpec(
            RandomPolicy, {"observation_space": self.observation_space, "action_space": self.action_space}
        )

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return {}
