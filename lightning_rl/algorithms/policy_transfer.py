"""Starting one algorithm from another's policy: behaviour cloning, then PPO (or any pair).

``ppo.load_policy_weights_from(bc)`` copies what the EnvRunners run (the module's
``policy_weights()``: BC's, MARWIL's and PPO's ``PolicyNet``), the env-to-module connector state
(observation filter statistics: the network was trained on normalised inputs, so the
normalisation must come along) and, where both sides have one of the same shape, the value
network. The source may be a live algorithm, a :class:`~lightning_rl.TrainingRun` or a
checkpoint file (its stored inference recipe; no env or Lightning needed to read it).

Both sides must see the same env-side spaces and connectors and build the policy network
from the same ``model_config``; anything else is one clear error rather than silently
mismatched weights. Call it before training the target, so its first evaluation (and its
first samples) already use the loaded policy.

Both sides are seen only as :class:`PolicyHolder` (what an algorithm exposes about its
policies), so this module does not import the ``Algorithm`` class it serves.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from gymnasium import spaces

from lightning_rl import checkpoint_format as ckpt
from lightning_rl.connectors.base import EnvToModulePipeline, connector_spec
from lightning_rl.errors import ConfigError, UnknownNameError, unknown_name_message
from lightning_rl.policy import PolicyRecipe


@runtime_checkable
class PolicyHolder(Protocol):
    """What a policy transfer reads and writes on either side (an algorithm has all of it)."""

    policy_ids: list[str]
    policies: Mapping[str, torch.nn.Module]
    env_to_module_pipelines: dict[str, EnvToModulePipeline]
    connector_state: dict[str, list[dict[str, Any]]]

    def policy_env_spaces(self, policy_id: str) -> tuple[spaces.Space, spaces.Space]: ...


@dataclass
class TransferablePolicy:
    """What can move between algorithms: policy weights, their spaces, connectors and state."""

    name: str
    observation_space: spaces.Space
    action_space: spaces.Space
    env_to_module: list[dict[str, Any]]
    connector_state: list[dict[str, Any]] | None
    policy_weights: dict[str, torch.Tensor]
    value_weights: dict[str, torch.Tensor] | None


def load_policy_weights(
    target: PolicyHolder,
    source: Any,
    *,
    policy_id: str | None = None,
    source_policy_id: str | None = None,
    include_value_function: bool = True,
) -> None:
    """See :meth:`lightning_rl.algorithms.Algorithm.load_policy_weights_from`."""
    policy_id = _pick(list(target.policy_ids), policy_id, type(target).__name__)
    donor = _transferable(source, source_policy_id)
    own_obs, own_action = target.policy_env_spaces(policy_id)
    for what, theirs, ours in (
        ("observation space", donor.observation_space, own_obs),
        ("action space", donor.action_space, own_action),
    ):
        if theirs != ours:
            raise ConfigError(
                f"Cannot start {type(target).__name__} from {donor.name}: its {what} is {theirs}, but this "
                f"algorithm's env has {ours}."
            )
    own_connectors = [connector_spec(c) for c in target.env_to_module_pipelines[policy_id]]
    if _plain(donor.env_to_module) != _plain(own_connectors):
        raise ConfigError(
            f"Cannot start {type(target).__name__} from {donor.name}: its env-to-module connectors are "
            f"{donor.env_to_module}, but this algorithm's are {own_connectors}; use the same "
            "env_to_module_connector setting for both."
        )
    module = target.policies[policy_id]
    _copy_into(
        module.policy_weights(), donor.policy_weights, f"{type(target).__name__}'s policy network", donor
    )
    if include_value_function and donor.value_weights is not None:
        value_net = getattr(module, "value_net", None)
        if isinstance(value_net, torch.nn.Module) and _same_shapes(
            value_net.state_dict(), donor.value_weights
        ):
            _copy_into(value_net.state_dict(), donor.value_weights, "value network", donor)
    if donor.connector_state is not None:
        state = copy.deepcopy(donor.connector_state)
        target.env_to_module_pipelines[policy_id].set_state(state)
        target.connector_state[policy_id] = state


def _transferable(source: Any, policy_id: str | None) -> TransferablePolicy:
    algorithm = getattr(source, "algorithm", source)  # a TrainingRun holds its algorithm
    if isinstance(algorithm, PolicyHolder):
        policy_id = _pick(list(algorithm.policy_ids), policy_id, type(algorithm).__name__)
        module = algorithm.policies[policy_id]
        observation_space, action_space = algorithm.policy_env_spaces(policy_id)
        value_net = getattr(module, "value_net", None)
        return TransferablePolicy(
            name=type(algorithm).__name__,
            observation_space=observation_space,
            action_space=action_space,
            env_to_module=[connector_spec(c) for c in algorithm.env_to_module_pipelines[policy_id]],
            connector_state=copy.deepcopy(algorithm.connector_state.get(policy_id)),
            policy_weights={k: v.detach() for k, v in module.policy_weights().items()},
            value_weights=value_net.state_dict() if isinstance(value_net, torch.nn.Module) else None,
        )
    if isinstance(source, str | os.PathLike):
        return _from_checkpoint(source, policy_id)
    raise ConfigError(
        f"load_policy_weights_from needs an algorithm, a TrainingRun or a checkpoint path, got "
        f"{type(source).__name__}."
    )


def _from_checkpoint(path: str | os.PathLike, policy_id: str | None) -> TransferablePolicy:
    path = ckpt.resolve_checkpoint_path(path)
    # Only the policy's own names are checked (its recipe needs no hyperparameters); allow-list
    # through LIGHTNING_RL_TRUSTED_CLASSES.
    checkpoint = ckpt.load_checkpoint(path, check_hyperparameters=False)
    section = checkpoint[ckpt.KEY]
    recipes = section.get("inference") or {}
    name = f"checkpoint {str(path)!r}"
    if not recipes:
        raise ConfigError(
            f"{name} holds no inference recipe (an old checkpoint format); load it with "
            "TrainingRun.from_checkpoint(...) and pass its algorithm instead."
        )
    policy_id = _pick(list(recipes), policy_id, name)
    state_dict = checkpoint["state_dict"]
    connector_state = (section.get("connector_state") or {}).get(policy_id)
    with ckpt.name_guard(name[0].upper() + name[1:]):
        recipe = PolicyRecipe.from_data(policy_id, recipes[policy_id], state_dict, connector_state)
    prefix = f"policies.{policy_id}.value_net."
    value_weights = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return TransferablePolicy(
        name=f"{section.get('algorithm') or 'the algorithm'} ({name})",
        observation_space=recipe.observation_space,
        action_space=recipe.action_space,
        env_to_module=[dict(spec) for spec in recipe.env_to_module],
        connector_state=connector_state,
        policy_weights=recipe.weights,
        value_weights=value_weights or None,
    )


def _copy_into(
    live: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], what: str, donor: TransferablePolicy
) -> None:
    """Copy in place into ``live`` (state-dict tensors share storage with the parameters)."""
    missing = sorted(set(live) - set(weights))
    unexpected = sorted(set(weights) - set(live))
    mismatched = [k for k in live if k in weights and tuple(live[k].shape) != tuple(weights[k].shape)]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"missing {missing[:4]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:4]}")
        if mismatched:
            details.append(
                "different shapes "
                + ", ".join(
                    f"{k}: {tuple(weights[k].shape)} vs {tuple(live[k].shape)}" for k in mismatched[:4]
                )
            )
        raise ConfigError(
            f"The weights of {donor.name} do not fit {what} ({'; '.join(details)}); build both algorithms "
            "with the same model_config."
        )
    with torch.no_grad():
        for key, tensor in live.items():
            tensor.copy_(weights[key].to(device=tensor.device, dtype=tensor.dtype))


def _same_shapes(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(tuple(a[k].shape) == tuple(b[k].shape) for k in a)


def _pick(available: list[str], policy_id: str | None, source: str) -> str:
    if policy_id is None:
        if len(available) != 1:
            raise ConfigError(f"{source} has several policies ({', '.join(available)}); pass policy_id=.")
        return available[0]
    if policy_id not in available:
        raise UnknownNameError(unknown_name_message(f"policy id of {source}", policy_id, available))
    return policy_id


def _plain(specs: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(str(s.get("name")), repr(sorted((s.get("config") or {}).items()))) for s in specs]
