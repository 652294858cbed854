"""The one inference path: a trained policy with the connectors it was trained with.

RLlib users find that a policy behaves differently outside RLlib because manual inference
skips the connectors (no observation filter, no frame stack, no action unsquashing). Here
there is no way around them: a :class:`Policy` is built from the same recipe the EnvRunners
use (env-to-module connectors with their saved state, the inference policy from
``module.policy_spec()`` with ``module.policy_weights()``, the module-to-env connectors) and
its only entry points, :meth:`Policy.compute_single_action` and :meth:`Policy.compute_actions`,
run all of it, in the runner's order. Checkpoints carry that recipe as plain data (see
:func:`checkpoint_recipes`), so :meth:`Policy.from_checkpoint` needs neither the training env
nor Lightning, nor the algorithm class: this module sits below the algorithms and reads only what
the checkpoint stores. A checkpoint without a stored recipe (format 1, or a recipe with no
plain-data form) needs its algorithm rebuilt, which is the training run's job:
:func:`lightning_rl.training_run.policy_from_checkpoint` does both.

Stateful connectors (frame stacks, previous actions and rewards) keep one state per row of
the batch, like the runner keeps one per env copy: row ``i`` of every ``compute_actions`` call
continues the episode of row ``i`` of the previous call until ``episode_start`` marks a new
one; a recurrent inference policy's hidden state follows the same rows and episode starts
(its ``reset``/``episode_start`` hooks are called where the runner calls them). Use
:meth:`Policy.copy` for independent streams.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lightning_rl import checkpoint_format as ckpt
from lightning_rl._imports import import_object, object_path
from lightning_rl._tree import batch_size_of, map_structure, stack_structures, to_torch
from lightning_rl.connectors.base import (
    ConnectorSpec,
    EnvToModulePipeline,
    ModuleToEnvPipeline,
    connector_spec,
)
from lightning_rl.env_runners.env_runner import reset_policy_state, start_policy_episodes, to_env_actions
from lightning_rl.errors import CheckpointError, ConfigError, UnknownNameError, unknown_name_message
from lightning_rl.modules.policy_networks import InferencePolicy, PolicySpec
from lightning_rl.serialization import NotPlainDataError, from_plain, space_from_data, space_to_data, to_plain

__all__ = ["MissingRecipeError", "Policy", "PolicyRecipe", "PolicySource", "checkpoint_recipes"]


class MissingRecipeError(CheckpointError):
    """The checkpoint stores no plain-data recipe for the policy: only a rebuilt algorithm can
    serve it (:func:`lightning_rl.training_run.policy_from_checkpoint`)."""


class PolicySource(Protocol):
    """What a recipe is read from: a live algorithm's policy set, as the inference layer sees it.

    The inference layer is below the algorithms, so it names the few members it reads instead
    of the ``Algorithm`` class (every ``Algorithm`` is one).
    """

    policies: Mapping[str, Any]  # policy id -> module with policy_spec() and policy_weights()
    env_to_module_pipelines: Mapping[str, Any]
    module_to_env_specs: Mapping[str, Sequence[ConnectorSpec]]
    connector_state: Mapping[str, Any]

    @property
    def policy_ids(self) -> Sequence[str]: ...

    def policy_env_spaces(self, policy_id: str) -> tuple[gym.Space, gym.Space]: ...

    def policy_extra(self, policy_id: str) -> dict[str, Any]: ...


@dataclass
class PolicyRecipe:
    """Everything that turns a raw env observation into an env action for one policy id."""

    policy_id: str
    observation_space: gym.Space  # env side, before the env-to-module connectors
    action_space: gym.Space  # env side, after the module-to-env connectors
    env_to_module: list[ConnectorSpec]
    module_to_env: list[ConnectorSpec]
    policy_spec: PolicySpec
    weights: dict[str, torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)
    connector_state: list[dict[str, Any]] | None = None
    algorithm: str | None = None

    @classmethod
    def from_algorithm(cls, algorithm: PolicySource, policy_id: str, snapshot: bool = True) -> PolicyRecipe:
        """The recipe of a live algorithm's policy; a ``snapshot`` copies the weights, so later
        training does not change it (without, the weights are the live tensors)."""
        module = algorithm.policies[policy_id]
        weights = {k: v.detach() for k, v in module.policy_weights().items()}
        if snapshot:
            weights = {k: v.to("cpu").clone() for k, v in weights.items()}
        observation_space, action_space = algorithm.policy_env_spaces(policy_id)
        return cls(
            policy_id=policy_id,
            observation_space=observation_space,
            action_space=action_space,
            env_to_module=[connector_spec(c) for c in algorithm.env_to_module_pipelines[policy_id]],
            module_to_env=[dict(spec) for spec in algorithm.module_to_env_specs[policy_id]],
            policy_spec=module.policy_spec(),
            weights=weights,
            extra=copy.deepcopy(algorithm.policy_extra(policy_id)),
            connector_state=copy.deepcopy(algorithm.connector_state.get(policy_id)),
            algorithm=type(algorithm).__name__,
        )

    def to_data(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Plain data for a checkpoint; weights that are already in ``state_dict`` are referenced
        by key instead of stored twice (matched by storage, so any weight mapping works)."""
        class_path = object_path(self.policy_spec.policy_class)
        if class_path is None:
            raise NotPlainDataError(f"{self.policy_spec.policy_class!r} is not importable.")
        by_storage: dict[tuple, str] = {}
        for key, tensor in state_dict.items():
            if isinstance(tensor, torch.Tensor) and tensor.numel() > 0:
                by_storage.setdefault(_storage_key(tensor), key)
        references, tensors = {}, {}
        for name, tensor in self.weights.items():
            key = by_storage.get(_storage_key(tensor)) if tensor.numel() > 0 else None
            if key is None:
                tensors[name] = tensor.detach().to("cpu").clone()
            else:
                references[name] = key
        return {
            "observation_space": space_to_data(self.observation_space),
            "action_space": space_to_data(self.action_space),
            "env_to_module": to_plain(self.env_to_module),
            "module_to_env": to_plain(self.module_to_env),
            "policy_class": class_path,
            "policy_kwargs": to_plain(self.policy_spec.kwargs),
            "weight_keys": references,
            "weight_tensors": tensors,
            "extra": to_plain(self.extra),
        }

    @classmethod
    def from_data(
        cls,
        policy_id: str,
        data: Mapping[str, Any],
        state_dict: Mapping[str, torch.Tensor],
        connector_state: list[dict[str, Any]] | None,
        algorithm: str | None = None,
    ) -> PolicyRecipe:
        weights = dict(data.get("weight_tensors", {}))
        for name, key in data.get("weight_keys", {}).items():
            if key not in state_dict:
                raise CheckpointError(
                    f"Policy {policy_id!r} refers to weight {key!r}, which the checkpoint lacks."
                )
            weights[name] = state_dict[key]
        try:
            policy_class = import_object(
                data["policy_class"], kind="inference policy class", accept=ckpt.accept_inference_policy
            )
        except (ImportError, AttributeError) as exc:
            raise CheckpointError(
                f"The checkpoint's inference policy class {data['policy_class']!r} cannot be imported "
                f"({exc}); install the package that defines it."
            ) from exc
        return cls(
            policy_id=policy_id,
            observation_space=space_from_data(data["observation_space"]),
            action_space=space_from_data(data["action_space"]),
            env_to_module=from_plain(data["env_to_module"]),
            module_to_env=from_plain(data["module_to_env"]),
            policy_spec=PolicySpec(policy_class, from_plain(data["policy_kwargs"])),
            weights=weights,
            extra=from_plain(data.get("extra", {})),
            connector_state=connector_state,
            algorithm=algorithm,
        )


def _storage_key(tensor: torch.Tensor) -> tuple:
    return (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)


def checkpoint_recipes(algorithm: PolicySource, state_dict: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{policy_id: plain-data recipe}`` for ``checkpoint["lightning_rl"]["inference"]``.

    A policy whose recipe has no plain-data form (a space type or spec argument the codec does
    not know) is left out; :meth:`Policy.from_checkpoint` then rebuilds the algorithm instead.
    """
    recipes = {}
    for policy_id in algorithm.policy_ids:
        try:
            recipe = PolicyRecipe.from_algorithm(algorithm, policy_id, snapshot=False)
            recipes[policy_id] = recipe.to_data(state_dict)
        except NotPlainDataError:
            continue
    return recipes


def _select_policy_id(available: Sequence[str], policy_id: str | None, source: str) -> str:
    if policy_id is None:
        if len(available) != 1:
            raise ConfigError(
                f"{source} has several policies ({', '.join(available)}); pass policy_id= (--policy_id) to "
                "choose one."
            )
        return available[0]
    if policy_id not in available:
        raise UnknownNameError(unknown_name_message(f"policy id in {source}", policy_id, available))
    return policy_id


class Policy:
    """A trained policy and its connectors: raw env observations in, env actions out.

    Build it with :meth:`from_checkpoint`, :meth:`from_algorithm` (``algo.get_policy()``), or
    from a :class:`PolicyRecipe`. The weights are a snapshot taken at that moment.

    Args:
        recipe: what to build (spaces, connector specs and state, inference policy, weights).
        seed: seeds the action sampling of ``explore=True`` calls (None: fresh randomness).
    """

    def __init__(self, recipe: PolicyRecipe, *, seed: int | None = None) -> None:
        self.recipe = recipe
        self.policy_id = recipe.policy_id
        self.observation_space = recipe.observation_space
        self.action_space = recipe.action_space
        self.env_to_module = EnvToModulePipeline.from_specs(
            recipe.env_to_module, recipe.observation_space, recipe.action_space
        )
        self.env_to_module.set_state(recipe.connector_state)
        self.module_to_env = ModuleToEnvPipeline.from_specs(recipe.module_to_env, recipe.action_space)
        self.inference_policy: InferencePolicy = recipe.policy_spec.build()
        self.inference_policy.load_weights(recipe.weights)
        if recipe.extra:
            self.inference_policy.set_extra(recipe.extra)
        self._discrete_start = (
            int(self.action_space.start) if isinstance(self.action_space, spaces.Discrete) else 0
        )
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self._num_rows: int | None = None
        self._pending_start: torch.Tensor | None = None
        self._previous_actions: torch.Tensor | None = None

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        policy_id: str | None = None,
        *,
        seed: int | None = None,
        trusted_classes: ckpt.TrustedClasses = (),
    ) -> Policy:
        """Load one policy of a checkpoint file (or of the last ``*.ckpt``, by name, in a directory).

        Opens the file with ``torch.load(weights_only=True)`` and builds the policy from the
        recipe the checkpoint stores; the training env is never created. A checkpoint without
        one (format 1, or a recipe with no plain-data form) raises :class:`MissingRecipeError`:
        :func:`lightning_rl.training_run.policy_from_checkpoint` rebuilds its algorithm. Every
        class the file names must be registered, part of lightning-rl or an imported subclass
        of the expected base; ``trusted_classes`` (classes or ``"module:attr"`` paths) allows
        more, such as a custom model (see ``docs/security.md``).
        """
        path = ckpt.resolve_checkpoint_path(path)
        # The recipe needs no hyperparameters (no env, no training settings): only the policy's
        # own names are checked, unless the algorithm has to be rebuilt (below).
        checkpoint = ckpt.load_checkpoint(path, trusted_classes=trusted_classes, check_hyperparameters=False)
        section = checkpoint[ckpt.KEY]
        recipes = section.get("inference") or {}
        available = list(section.get("policy_ids") or recipes)
        policy_id = _select_policy_id(available, policy_id, f"checkpoint {str(path)!r}")
        with ckpt.name_guard(f"Checkpoint {str(path)!r}", trusted_classes):
            if policy_id in recipes:
                connector_state = (section.get("connector_state") or {}).get(policy_id)
                recipe = PolicyRecipe.from_data(
                    policy_id,
                    recipes[policy_id],
                    checkpoint["state_dict"],
                    connector_state,
                    section.get("algorithm"),
                )
                return cls(recipe, seed=seed)
        raise MissingRecipeError(
            f"Checkpoint {str(path)!r} stores no inference recipe for policy {policy_id!r} (format 1, "
            "or a recipe that is not plain data), so its algorithm must be rebuilt: use "
            "lightning_rl.training_run.policy_from_checkpoint(path) or "
            "TrainingRun.from_checkpoint(path).get_policy() (the CLI's export does this itself)."
        )

    @classmethod
    def from_algorithm(
        cls, algorithm: PolicySource, policy_id: str | None = None, *, seed: int | None = None
    ) -> Policy:
        """A snapshot of a live algorithm's policy, e.g. in the middle of training."""
        policy_id = _select_policy_id(list(algorithm.policy_ids), policy_id, type(algorithm).__name__)
        return cls(PolicyRecipe.from_algorithm(algorithm, policy_id), seed=seed)

    def copy(self, *, seed: int | None = None) -> Policy:
        """An independent stream: own connector state, own recurrent state (the inference policy
        is copied too) and own sampling generator; same weights."""
        other = copy.copy(self)
        other.env_to_module = copy.deepcopy(self.env_to_module)
        other.inference_policy = copy.deepcopy(self.inference_policy)
        other.generator = torch.Generator()
        if seed is None:
            other.generator.seed()
        else:
            other.generator.manual_seed(int(seed))
        other.reset()
        return other

    # -- inference ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every row's episode: the next call starts new episodes in all rows."""
        self._num_rows = None
        self._pending_start = None
        self._previous_actions = None

    def compute_actions(
        self,
        obs_batch: Any,
        *,
        explore: bool = False,
        episode_start: Any = None,
        rewards: Any = None,
        return_info: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
        """Env actions for a batch of raw env observations (one row per env/episode stream).

        Args:
            obs_batch: an array ``[B, ...]`` (dicts/tuples of arrays for Dict/Tuple spaces) or a
                list of single observations.
            explore: sample from the action distribution (True) or act greedily (False, like
                evaluation with ``evaluation_explore=False``).
            episode_start: bool per row: this observation is the first of a new episode. The
                first call after construction, :meth:`reset` or a change of ``B`` starts every row.
            rewards: the rewards the previous call's actions earned, per row (for connectors that
                use previous rewards; zeros when not given).
            return_info: also return ``{"observation": what the network saw, **its outputs}``
                (module-side action, log-prob, ...), for debugging what the connectors did.
        """
        obs = to_torch(_as_batch(obs_batch))
        num_rows = batch_size_of(obs)
        if num_rows != self._num_rows:
            self.reset()
            self._num_rows = num_rows
            self.env_to_module.reset(num_rows)
            reset_policy_state(self.inference_policy, num_rows)
            self._pending_start = torch.ones(num_rows, dtype=torch.bool)
        pipeline = self.env_to_module
        if self._previous_actions is not None:
            reward = torch.zeros(num_rows) if rewards is None else _rows(rewards, num_rows, torch.float32)
            pipeline.record_step(self._previous_actions, reward)
        start = self._pending_start
        if episode_start is not None:
            start = start | _rows(episode_start, num_rows, torch.bool)
        if bool(start.any()):
            env_ids = torch.nonzero(start).reshape(-1)
            pipeline.episode_start(env_ids)
            start_policy_episodes(self.inference_policy, env_ids)
        self._pending_start = torch.zeros(num_rows, dtype=torch.bool)
        with torch.no_grad():
            module_obs = pipeline(obs, update=False)
            out = self.inference_policy(module_obs, explore, self.generator)
        self._previous_actions = out["action"]
        actions = to_env_actions(self.module_to_env, out["action"], self._discrete_start)
        if return_info:
            info = {"observation": map_structure(lambda x: x.numpy(), module_obs)}
            info.update({k: v.numpy() for k, v in out.items()})
            return actions, info
        return actions

    def compute_single_action(
        self,
        obs: Any,
        *,
        explore: bool = False,
        episode_start: bool = False,
        reward: float | None = None,
        return_info: bool = False,
    ) -> Any:
        """The env action for one raw observation of one episode stream.

        Call it once per env step; pass ``episode_start=True`` with the first observation of
        every episode after the first (or call :meth:`reset`), and ``reward`` (the reward of the
        previous action) when connectors use previous rewards. Returns an ``int`` for Discrete
        action spaces, else an array.
        """
        result = self.compute_actions(
            [obs],
            explore=explore,
            episode_start=[episode_start],
            rewards=None if reward is None else [reward],
            return_info=return_info,
        )
        actions, info = result if return_info else (result, None)
        action = actions[0]
        if isinstance(self.action_space, spaces.Discrete):
            action = int(action)
        if return_info:
            return action, map_structure(lambda x: x[0], info)
        return action

    def __repr__(self) -> str:
        return (
            f"Policy(policy_id={self.policy_id!r}, algorithm={self.recipe.algorithm!r}, "
            f"env_to_module={list(self.env_to_module)}, module_to_env={list(self.module_to_env)})"
        )


def _as_batch(obs_batch: Any) -> Any:
    if isinstance(obs_batch, list):
        if not obs_batch:
            raise ConfigError("compute_actions got an empty list of observations.")
        return stack_structures(obs_batch)
    return obs_batch


def _rows(values: Any, num_rows: int, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(values)).to(dtype).reshape(-1)
    if tensor.numel() != num_rows:
        raise ConfigError(f"Expected one value per row ({num_rows}), got {tensor.numel()}: {values!r}")
    return tensor
