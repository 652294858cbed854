"""Env-to-module connectors: what stands between an env's observation and the network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lightning_rl.connectors.base import EnvToModule
from lightning_rl.errors import SpaceError

__all__ = ["FlattenObservations", "MeanStdFilter", "PrevActionsPrevRewards"]


def _flat_size(space: gym.Space) -> int:
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    if isinstance(space, spaces.MultiBinary):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Dict):
        return sum(_flat_size(s) for s in space.spaces.values())
    if isinstance(space, spaces.Tuple):
        return sum(_flat_size(s) for s in space.spaces)
    raise SpaceError(
        f"FlattenObservations cannot flatten {space}: supported are Box, Discrete, MultiDiscrete, "
        "MultiBinary, and Dict/Tuple of those."
    )


def _flatten(space: gym.Space, obs: Any) -> torch.Tensor:
    if isinstance(space, spaces.Box):
        return obs.reshape(obs.shape[0], -1).float()
    if isinstance(space, spaces.Discrete):
        return torch.nn.functional.one_hot((obs.long() - int(space.start)).reshape(-1), int(space.n)).float()
    if isinstance(space, spaces.MultiDiscrete):
        flat_obs = obs.reshape(obs.shape[0], -1).long()
        parts = [
            torch.nn.functional.one_hot(flat_obs[:, i], int(n)).float()
            for i, n in enumerate(np.asarray(space.nvec).reshape(-1))
        ]
        return torch.cat(parts, dim=-1)
    if isinstance(space, spaces.MultiBinary):
        return obs.reshape(obs.shape[0], -1).float()
    if isinstance(space, spaces.Dict):
        return torch.cat([_flatten(s, obs[k]) for k, s in space.spaces.items()], dim=-1)
    if isinstance(space, spaces.Tuple):
        return torch.cat([_flatten(s, obs[i]) for i, s in enumerate(space.spaces)], dim=-1)
    raise SpaceError(f"FlattenObservations cannot flatten {space}")


class FlattenObservations(EnvToModule):
    """Flattens any Box/Discrete/MultiDiscrete/MultiBinary/Dict/Tuple observation to one vector.

    Discrete parts become one-hot vectors, so ``Taxi-v3``'s integer state or a Dict of mixed
    parts feeds a plain MLP. ``keys_to_flatten`` limits flattening to some keys of a Dict
    space; the others pass through unchanged (e.g. an image next to a vector).
    """

    def __init__(self, keys_to_flatten: Sequence[str] | None = None) -> None:
        self.keys_to_flatten = list(keys_to_flatten) if keys_to_flatten is not None else None
        self._space: gym.Space | None = None

    def setup(self, observation_space: gym.Space) -> gym.Space:
        self._space = observation_space
        if self.keys_to_flatten is None:
            size = _flat_size(observation_space)
            return spaces.Box(-np.inf, np.inf, (size,), np.float32)
        if not isinstance(observation_space, spaces.Dict):
            raise SpaceError(
                f"FlattenObservations(keys_to_flatten=...) needs a Dict space, got {observation_space}"
            )
        missing = [k for k in self.keys_to_flatten if k not in observation_space.spaces]
        if missing:
            raise SpaceError(
                f"FlattenObservations: keys {missing} are not in the observation space "
                f"(keys: {list(observation_space.spaces)})"
            )
        out = dict(observation_space.spaces)
        for key in self.keys_to_flatten:
            out[key] = spaces.Box(-np.inf, np.inf, (_flat_size(out[key]),), np.float32)
        return spaces.Dict(out)

    def __call__(self, obs: Any, *, env_ids: torch.Tensor | None = None, update: bool = True) -> Any:
        space = self._space
        if self.keys_to_flatten is None:
            return _flatten(space, obs)
        out = dict(obs)
        for key in self.keys_to_flatten:
            out[key] = _flatten(space.spaces[key], obs[key])
        return out

    def as_module(self) -> torch.nn.Module | None:
        if isinstance(self._space, spaces.Box):
            return _FlattenBox()
        if isinstance(self._space, spaces.Discrete):
            return _OneHot(int(self._space.n), int(self._space.start))
        return None


class _FlattenBox(torch.nn.Module):
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.reshape(obs.shape[0], -1).float()


class _OneHot(torch.nn.Module):
    def __init__(self, n: int, start: int) -> None:
        super().__init__()
        self.n, self.start = n, start

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # comparison with arange exports to ONNX, unlike one_hot
        values = torch.arange(self.n, device=obs.device) + self.start
        return (obs.reshape(-1, 1).long() == values).float()


class RunningMeanStd:
    """Count, mean and sum of squared deviations, mergeable across copies (Chan et al.)."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.count = 0.0
        self.mean = torch.zeros(tuple(shape), dtype=torch.float64)
        self.m2 = torch.zeros(tuple(shape), dtype=torch.float64)

    def update(self, batch: torch.Tensor) -> None:
        batch = batch.to(torch.float64)
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean = batch.mean(0)
        batch_m2 = ((batch - batch_mean) ** 2).sum(0)
        self.merge(n, batch_mean, batch_m2)

    def merge(self, count: float, mean: torch.Tensor, m2: torch.Tensor) -> None:
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * count / total)
        self.count = total

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / self.count if self.count > 1 else torch.ones_like(self.m2)

    def to_dict(self) -> dict[str, Any]:
        return {"count": float(self.count), "mean": self.mean.clone(), "m2": self.m2.clone()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RunningMeanStd:
        stats = cls(state["mean"].shape)
        stats.count = float(state["count"])
        stats.mean = torch.as_tensor(state["mean"], dtype=torch.float64).clone()
        stats.m2 = torch.as_tensor(state["m2"], dtype=torch.float64).clone()
        return stats


class MeanStdFilter(EnvToModule):
    """Normalises observations by running mean and std (RLlib's ``MeanStdFilter``).

    Every runner updates its own statistics while sampling and reports only what it saw
    since the last sync (a delta); the driver merges all deltas into one global state,
    which is broadcast back with the weights, kept in checkpoints and used frozen in
    evaluation and inference.

    ``multi_agent`` is RLlib's constructor argument, accepted so ported configs run: here every
    policy has its own env-to-module pipeline, so statistics are per policy either way.
    """

    def __init__(
        self, clip: float | None = 10.0, epsilon: float = 1e-8, *, multi_agent: bool = False
    ) -> None:
        self.multi_agent = bool(multi_agent)
        # No effect here, so not part of the plain-data spec: specs, checkpoints and exported
        # metadata stay as they were.
        self._config.pop("multi_agent", None)
        self.clip = clip
        self.epsilon = epsilon
        self._stats: RunningMeanStd | None = None
        self._delta: RunningMeanStd | None = None
        self._shape: tuple[int, ...] = ()

    def setup(self, observation_space: gym.Space) -> gym.Space:
        if not isinstance(observation_space, spaces.Box) or not np.issubdtype(
            observation_space.dtype, np.floating
        ):
            raise SpaceError(
                f"MeanStdFilter needs a float Box observation space, got {observation_space}; "
                "put FlattenObservations before it for Discrete/Dict/Tuple observations."
            )
        self._shape = tuple(observation_space.shape)
        self._stats = RunningMeanStd(self._shape)
        self._delta = RunningMeanStd(self._shape)
        bound = np.inf if self.clip is None else self.clip
        return spaces.Box(-bound, bound, self._shape, np.float32)

    def __call__(
        self, obs: torch.Tensor, *, env_ids: torch.Tensor | None = None, update: bool = True
    ) -> torch.Tensor:
        if update:
            self._stats.update(obs)
            self._delta.update(obs)
        mean = self._stats.mean.to(obs.dtype if obs.is_floating_point() else torch.float32)
        std = torch.sqrt(self._stats.var + self.epsilon).to(mean.dtype)
        out = (obs - mean) / std
        if self.clip is not None:
            out = out.clamp(-self.clip, self.clip)
        return out.float()

    def get_state(self) -> dict[str, Any]:
        return self._stats.to_dict()

    def set_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if tuple(state["mean"].shape) != self._shape:
            raise SpaceError(
                f"MeanStdFilter state has shape {tuple(state['mean'].shape)}, but the observations have "
                f"shape {self._shape}."
            )
        # What this copy saw since its last pop_delta is in neither the new global state nor the
        # driver's merge yet: keep it, both in the statistics used from now on and in the delta
        # still to report, so a state arriving between a runner's updates and its report
        # (RLlib's filter sync) loses no observation.
        stats = RunningMeanStd.from_dict(state)
        stats.merge(self._delta.count, self._delta.mean, self._delta.m2)
        self._stats = stats

    def pop_delta(self) -> dict[str, Any] | None:
        delta = self._delta.to_dict()
        self._delta = RunningMeanStd(self._shape)
        return delta if delta["count"] > 0 else None

    @classmethod
    def merge_deltas(cls, state: dict[str, Any], deltas: Sequence[dict[str, Any]]) -> dict[str, Any]:
        merged = RunningMeanStd.from_dict(state) if state else RunningMeanStd(deltas[0]["mean"].shape)
        for delta in deltas:
            merged.merge(delta["count"], delta["mean"], delta["m2"])
        return merged.to_dict()

    def as_module(self) -> torch.nn.Module | None:
        std = torch.sqrt(self._stats.var + self.epsilon)
        return _Normalize(self._stats.mean.float(), std.float(), self.clip)


class _Normalize(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor, clip: float | None) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.clip = clip

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = (obs - self.mean) / self.std
        return out.clamp(-self.clip, self.clip) if self.clip is not None else out


class PrevActionsPrevRewards(EnvToModule):
    """Appends the last ``n_prev_actions`` actions (one-hot when discrete) and ``n_prev_rewards``
    rewards of each env copy to its (flat) observation; zeros at an episode's start.

    The classic input of recurrent policies (RLlib's ``lstm_use_prev_action/reward``, which
    add this connector), and useful to any model: a feed-forward policy that sees its previous
    action can, for instance, hold a course in a partially observed env.
    """

    def __init__(self, n_prev_actions: int = 1, n_prev_rewards: int = 1) -> None:
        if n_prev_actions < 0 or n_prev_rewards < 0:
            raise SpaceError(
                f"PrevActionsPrevRewards needs non-negative counts, got {n_prev_actions}, {n_prev_rewards}"
            )
        self.n_prev_actions = int(n_prev_actions)
        self.n_prev_rewards = int(n_prev_rewards)
        self._action_space: gym.Space | None = None
        self._actions = torch.zeros(0, self.n_prev_actions, 0)
        self._rewards = torch.zeros(0, self.n_prev_rewards)

    def set_action_space(self, action_space: gym.Space) -> None:
        if not isinstance(action_space, spaces.Discrete | spaces.Box):
            raise SpaceError(f"PrevActionsPrevRewards encodes Discrete or Box actions, got {action_space}")
        self._action_space = action_space

    @property
    def _action_width(self) -> int:
        space = self._action_space
        return int(space.n) if isinstance(space, spaces.Discrete) else int(np.prod(space.shape))

    def setup(self, observation_space: gym.Space) -> gym.Space:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise SpaceError(
                f"PrevActionsPrevRewards appends to a flat Box observation, got {observation_space}; "
                "put FlattenObservations before it."
            )
        extra = self.n_prev_actions * self._action_width + self.n_prev_rewards
        size = int(observation_space.shape[0]) + extra
        return spaces.Box(-np.inf, np.inf, (size,), np.float32)

    def reset(self, num_envs: int) -> None:
        self._actions = torch.zeros(num_envs, self.n_prev_actions, self._action_width)
        self._rewards = torch.zeros(num_envs, self.n_prev_rewards)

    def episode_start(self, env_ids: torch.Tensor) -> None:
        self._actions[env_ids] = 0.0
        self._rewards[env_ids] = 0.0

    def record_step(self, actions: torch.Tensor, rewards: torch.Tensor) -> None:
        if self.n_prev_actions:
            if isinstance(self._action_space, spaces.Discrete):
                encoded = torch.nn.functional.one_hot(actions.long().reshape(-1), self._action_width).float()
            else:
                encoded = actions.reshape(actions.shape[0], -1).float()
            self._actions = torch.cat([self._actions[:, 1:], encoded.unsqueeze(1)], dim=1)
        if self.n_prev_rewards:
            self._rewards = torch.cat([self._rewards[:, 1:], rewards.reshape(-1, 1).float()], dim=1)

    def __call__(
        self, obs: torch.Tensor, *, env_ids: torch.Tensor | None = None, update: bool = True
    ) -> torch.Tensor:
        if self._actions.shape[0] != obs.shape[0] and env_ids is None:
            self.reset(obs.shape[0])
        actions = self._actions if env_ids is None else self._actions[env_ids]
        rewards = self._rewards if env_ids is None else self._rewards[env_ids]
        return torch.cat([obs.float(), actions.flatten(1), rewards], dim=-1)
