"""The policy side of the external-env server: connectors, inference policy, uploads, models.

It is what every EnvRunner has (env-to-module pipeline, the inference policy built from the
algorithm's :class:`~lightning_rl.modules.PolicySpec`, module-to-env pipeline, the same action
conversion) without the env: observations come from clients. Clients' action requests of one
server tick are answered by ONE batched forward pass, and uploaded episodes (client-side
inference) are turned into the same segments as served episodes, through the same connectors.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lightning_rl._tree import stack_structures, to_torch
from lightning_rl.connectors.base import EnvToModule, EnvToModulePipeline, ModuleToEnvPipeline
from lightning_rl.env_runners.env_runner import to_env_actions
from lightning_rl.envs.external import protocol as proto
from lightning_rl.envs.external.protocol import ProtocolError
from lightning_rl.errors import ConfigError
from lightning_rl.external_server.local_model import LocalModelExporter
from lightning_rl.modules.policy_networks import InferencePolicy, PolicySpec
from lightning_rl.serialization import space_to_data, to_plain

LOG_PROB_KEY = "action_log_prob"


@dataclass
class UploadedEpisode:
    """One finished episode a client played with its own copy of the policy (decoded, checked)."""

    observations: Any  # [T + 1] raw env observations
    actions: np.ndarray  # [T] env actions
    module_actions: np.ndarray | None  # [T] what the network emitted (before module-to-env)
    log_probs: np.ndarray | None  # [T]
    rewards: np.ndarray  # [T]
    terminated: bool
    truncated: bool
    training: bool

    @property
    def length(self) -> int:
        return int(self.rewards.shape[0])


class PolicyBackend:
    """Inference, connectors and model export for one policy id; used from the server's thread only."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        policy_spec: PolicySpec,
        env_to_module: list[dict],
        module_to_env: list[dict],
        policy_id: str,
        update_connectors: bool = True,
        seed: int | None = None,
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.policy_spec = policy_spec
        self.env_to_module_specs = list(env_to_module)
        self.module_to_env_specs = list(module_to_env)
        self.policy_id = policy_id
        self.update_connectors = update_connectors
        self.env_to_module = EnvToModulePipeline.from_specs(env_to_module, observation_space)
        self.module_to_env = ModuleToEnvPipeline.from_specs(module_to_env, action_space)
        _check_stateless_connectors(self.env_to_module)
        self.policy: InferencePolicy = policy_spec.build()
        _check_stateless_policy(self.policy)
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self.weights_version = -1
        self.weights: dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in _policy_weights(self.policy).items()
        }
        self.extra: dict[str, Any] = {}
        self._discrete_start = int(action_space.start) if isinstance(action_space, spaces.Discrete) else 0
        self.extra_keys = self._probe_extra_keys()
        self._models: dict[str, tuple[int, bytes, dict[str, Any]]] = {}
        self._model_exporter: Any = None

    def _probe_extra_keys(self) -> list[str]:
        """What the policy returns next to ``action`` (e.g. PPO's log-probs), from one dry forward."""
        sample = self.observation_space.sample()
        with torch.no_grad():
            module_obs = self.env_to_module(to_torch(stack_structures([sample])), update=False)
            out = self.policy(module_obs, True, torch.Generator().manual_seed(0))
        return [k for k in out if k != "action"]

    # -- state from the learner ----------------------------------------------------------------
    def set_state(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        policy_state = state.get("policies", {}).get(self.policy_id)
        if policy_state is not None:
            weights = policy_state.get("weights")
            version = int(state.get("version", 0))
            if weights is not None and version != self.weights_version:
                self.policy.load_weights(weights)
                self.weights = {k: v.detach().to("cpu").clone() for k, v in weights.items()}
                self.weights_version = version
            if policy_state.get("extra"):
                self.policy.set_extra(policy_state["extra"])
                self.extra = copy.deepcopy(policy_state["extra"])
        connectors = state.get("connectors", {}).get(self.policy_id)
        if connectors is not None:
            self.env_to_module.set_state(connectors)

    def pop_deltas(self) -> dict[str, list[dict[str, Any] | None]]:
        return {self.policy_id: self.env_to_module.pop_deltas()}

    # -- observations and actions ----------------------------------------------------------------
    def decode_observation(self, value: Any) -> Any:
        return proto.decode_value(value, self.observation_space, "observation")

    def to_module(self, raw_observations: list[Any], update: bool) -> Any:
        """Raw env observations (one per row) -> module observations, through the connectors."""
        batch = to_torch(stack_structures(raw_observations))
        return self.env_to_module(batch, update=update and self.update_connectors)

    def act(self, module_obs: Any, explore: bool) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """One batched forward: the policy's outputs (module side) and the env actions."""
        with torch.no_grad():
            out = self.policy(module_obs, explore, self.generator)
        return out, to_env_actions(self.module_to_env, out["action"], self._discrete_start)

    def wire_action(self, env_action: np.ndarray) -> Any:
        """An env action as the client receives it: an int for Discrete, else a (nested) list."""
        if isinstance(self.action_space, spaces.Discrete):
            return int(env_action)
        return np.asarray(env_action).tolist()

    # -- client-side inference ---------------------------------------------------------------------
    @property
    def module_actions_required(self) -> bool:
        """Uploads must carry the network's own actions when connectors change them on the way."""
        return len(self.module_to_env) > 0

    def decode_upload(
        self,
        data: Any,
        training: bool,
        max_abs_reward: float | None = None,
        max_abs_log_prob: float | None = None,
    ) -> UploadedEpisode:
        """One uploaded episode from its wire form; ProtocolError naming what does not fit.

        Every number is checked as the learner will see it (float32) and against the bounds no
        legitimate value exceeds, so one client cannot turn the learner's weights into NaN.
        """
        if not isinstance(data, dict):
            raise ProtocolError(proto.BAD_REQUEST, "Each uploaded episode must be a map.")
        message = {"type": proto.UPLOAD_EPISODES, **data}
        rewards_value = proto.require(message, "rewards", (list, dict))
        rewards = proto.numbers(
            rewards_value,
            _length_of(rewards_value),
            "rewards",
            low=-max_abs_reward if max_abs_reward is not None else None,
            high=max_abs_reward,
        )
        length = rewards.shape[0]
        if length == 0:
            raise ProtocolError(proto.BAD_REQUEST, "An uploaded episode needs at least one step.")
        observations = proto.decode_batch(
            proto.require(message, "observations", (list, dict)), self.observation_space, "observations"
        )
        if _batch_len(observations) != length + 1:
            raise ProtocolError(
                proto.BAD_REQUEST,
                f"An episode of {length} rewards needs {length + 1} observations (incl. the final one), "
                f"got {_batch_len(observations)}.",
            )
        actions = proto.decode_batch(
            proto.require(message, "actions", (list, dict)), self.action_space, "actions"
        )
        if _batch_len(actions) != length:
            raise ProtocolError(proto.BAD_REQUEST, f"Expected {length} actions, got {_batch_len(actions)}.")
        module_actions = None
        if message.get("module_actions") is not None:
            space = self.module_to_env.module_action_space
            module_actions = proto.decode_batch(message["module_actions"], space, "module_actions")
            if _batch_len(module_actions) != length:
                raise ProtocolError(
                    proto.BAD_REQUEST, f"Expected {length} module_actions, got {_batch_len(module_actions)}."
                )
        elif self.module_actions_required:
            raise ProtocolError(
                proto.BAD_REQUEST,
                "This server's policy changes actions on the way to the env (module-to-env connectors "
                f"{[s['name'] for s in self.module_to_env_specs]}), so uploads need 'module_actions'.",
            )
        unsupported = [k for k in self.extra_keys if k != LOG_PROB_KEY]
        if unsupported:
            raise ProtocolError(
                proto.BAD_REQUEST,
                f"This server's policy also outputs {unsupported}, which clients cannot provide; use "
                "server-side inference (get_action).",
            )
        log_probs = None
        if message.get("action_log_probs") is not None:
            log_probs = proto.numbers(
                message["action_log_probs"],
                length,
                "action_log_probs",
                *self._log_prob_bounds(max_abs_log_prob),
            )
        elif LOG_PROB_KEY in self.extra_keys and training:
            raise ProtocolError(
                proto.BAD_REQUEST,
                "This server's algorithm learns on-policy from action log-probabilities; each uploaded "
                "episode needs 'action_log_probs' (the model's 'action_log_prob' output).",
            )
        terminated = proto.flag(message, "terminated", False)
        truncated = proto.flag(message, "truncated", False)
        if not (terminated or truncated):
            raise ProtocolError(
                proto.BAD_REQUEST, "An uploaded episode must be finished: set 'terminated' or 'truncated'."
            )
        return UploadedEpisode(
            observations, actions, module_actions, log_probs, rewards, terminated, truncated, training
        )

    def _log_prob_bounds(self, max_abs: float | None) -> tuple[float | None, float | None]:
        """What a model's log-probability can be: a probability (discrete actions) is at most 1,
        so its log is <= 0 (a little slack for float32 rounding); any density is bounded by
        ``max_abs`` in magnitude."""
        low = -max_abs if max_abs is not None else None
        discrete = isinstance(
            self.module_to_env.module_action_space,
            spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary,
        )
        return low, (1e-3 if discrete else max_abs)

    def upload_segment(self, episode: UploadedEpisode) -> dict[str, Any]:
        """An uploaded episode -> a segment ``[T]`` with module observations and stored extras."""
        length = episode.length
        module_obs = self.env_to_module(to_torch(episode.observations), update=self.update_connectors)
        if episode.module_actions is not None:
            action = torch.as_tensor(np.asarray(episode.module_actions))
        else:
            action = torch.as_tensor(np.asarray(episode.actions) - self._discrete_start)
        action = action.to(_action_dtype(self.module_to_env.module_action_space))
        terminated = torch.zeros((length, 1), dtype=torch.bool)
        truncated = torch.zeros((length, 1), dtype=torch.bool)
        terminated[-1, 0] = episode.terminated
        truncated[-1, 0] = episode.truncated
        segment: dict[str, Any] = {
            "observation": _slice(module_obs, slice(0, length)),
            "action": action,
            "next": {
                "observation": _slice(module_obs, slice(1, length + 1)),
                "reward": torch.as_tensor(episode.rewards, dtype=torch.float32).reshape(length, 1),
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated | truncated,
            },
        }
        if LOG_PROB_KEY in self.extra_keys:
            segment[LOG_PROB_KEY] = torch.as_tensor(episode.log_probs, dtype=torch.float32)
        return segment

    def config_message(self) -> dict[str, Any]:
        return {
            "type": proto.CONFIG,
            "protocol_version": proto.PROTOCOL_VERSION,
            "policy_id": self.policy_id,
            "observation_space": space_to_data(self.observation_space),
            "action_space": space_to_data(self.action_space),
            "module_action_space": space_to_data(self.module_to_env.module_action_space),
            "weights_version": self.weights_version,
            "inference": ["remote", "local"],
            "model_formats": ["onnx", "torchscript"],
            "requires_action_log_probs": LOG_PROB_KEY in self.extra_keys,
            "requires_module_actions": self.module_actions_required,
            "env_to_module": to_plain(self.env_to_module_specs),
            "module_to_env": to_plain(self.module_to_env_specs),
        }

    def model(self, fmt: str) -> tuple[bytes, dict[str, Any]]:
        """The current policy as a self-contained artifact for client-side inference (cached per version)."""
        cached = self.cached_model(fmt)
        if cached is not None:
            return cached
        version = self.weights_version
        data, metadata = self.model_job(fmt)()
        self.store_model(fmt, version, data, metadata)
        return data, metadata

    def cached_model(self, fmt: str) -> tuple[bytes, dict[str, Any]] | None:
        """The exported model of the current weights version, if one was made already."""
        cached = self._models.get(fmt)
        if cached is not None and cached[0] == self.weights_version:
            return cached[1], cached[2]
        return None

    def store_model(self, fmt: str, version: int, data: bytes, metadata: dict[str, Any]) -> None:
        """Keep an export for its weights version (an export of an older version is not kept)."""
        if version == self.weights_version:
            self._models[fmt] = (version, data, metadata)

    def model_job(self, fmt: str) -> Any:
        """A callable exporting a snapshot of the current policy, safe to run on another thread.

        The snapshot (weights, extra state, connector statistics) is taken now, on the server's
        thread; the export builds its own copy of the policy from it, so inference and new
        weights on the server's thread never race with it.
        """
        if self._model_exporter is None:
            self._model_exporter = LocalModelExporter(self)
        return self._model_exporter.job(fmt)

    def weights_message(self, binary: bool) -> dict[str, Any]:
        return {
            "type": proto.WEIGHTS,
            "weights_version": self.weights_version,
            "weights": {k: proto.pack_array(v.numpy(), binary) for k, v in self.weights.items()},
        }


def _policy_weights(policy: InferencePolicy) -> dict[str, torch.Tensor]:
    net = getattr(policy, "net", None)
    return net.state_dict() if isinstance(net, torch.nn.Module) else policy.state_dict()


def _check_stateless_connectors(pipeline: EnvToModulePipeline) -> None:
    for connector in pipeline:
        cls = type(connector)
        if (
            cls.record_step is not EnvToModule.record_step
            or cls.episode_start is not EnvToModule.episode_start
        ):
            raise ConfigError(
                f"The env-to-module connector {connector!r} keeps per-episode state (frame stacks, previous "
                "actions), which the external env server does not track per client episode; use "
                "connectors that work on single observations (FlattenObservations, MeanStdFilter) or "
                "stack frames in the client."
            )


def _check_stateless_policy(policy: InferencePolicy) -> None:
    cls = type(policy)
    if cls.reset is not InferencePolicy.reset or cls.episode_start is not InferencePolicy.episode_start:
        raise ConfigError(
            f"The inference policy {cls.__name__} is recurrent (it keeps state per env copy), which the "
            "external env server does not support; use a feed-forward model."
        )


def _action_dtype(space: gym.Space) -> torch.dtype:
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
        return torch.int64
    if isinstance(space, spaces.MultiBinary):
        return torch.int8
    return torch.float32


def _length_of(value: Any) -> int:
    if isinstance(value, dict):
        shape = value.get("shape")
        return int(shape[0]) if isinstance(shape, list) and shape else -1
    return len(value)


def _batch_len(tree: Any) -> int:
    if isinstance(tree, dict):
        return _batch_len(next(iter(tree.values())))
    if isinstance(tree, tuple):
        return _batch_len(tree[0])
    return int(np.asarray(tree).shape[0])


def _slice(tree: Any, index: slice) -> Any:
    if isinstance(tree, dict):
        return {k: _slice(v, index) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_slice(v, index) for v in tree)
    return tree[index]
