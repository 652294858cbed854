"""Module-to-env connectors: from a sampled action to one the env accepts.

The action stored for learning is always the module's own sample (so log-probabilities stay
consistent); only the copy sent to the env passes through these.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lightning_rl.connectors.base import ModuleToEnv
from lightning_rl.errors import SpaceError

__all__ = ["ClipActions", "UnsquashActions", "default_module_to_env"]


def _finite_box(space: gym.Space, who: str) -> spaces.Box:
    if not isinstance(space, spaces.Box):
        raise SpaceError(f"{who} needs a Box action space, got {space}")
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise SpaceError(f"{who} needs finite action bounds, got low={space.low} high={space.high}")
    return space


class ClipActions(ModuleToEnv):
    """Clips actions into the env's Box bounds (RLlib's ``clip_actions=True``)."""

    def setup(self, action_space: gym.Space) -> gym.Space:
        box = _finite_box(action_space, "ClipActions")
        self._low = torch.as_tensor(box.low, dtype=torch.float32)
        self._high = torch.as_tensor(box.high, dtype=torch.float32)
        return action_space

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(actions, self._high), self._low)

    def as_module(self) -> torch.nn.Module:
        return _Clip(self._low, self._high)


class UnsquashActions(ModuleToEnv):
    """Maps module actions in [-1, 1] linearly onto the env's bounds (``normalize_actions=True``).

    Values outside [-1, 1] (a Gaussian sample can be) are clipped first, so the env never sees
    an out-of-bounds action and the module can work in one scale for every env.
    """

    def setup(self, action_space: gym.Space) -> gym.Space:
        box = _finite_box(action_space, "UnsquashActions")
        self._low = torch.as_tensor(box.low, dtype=torch.float32)
        self._high = torch.as_tensor(box.high, dtype=torch.float32)
        return spaces.Box(-1.0, 1.0, box.shape, np.float32)

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        return self._low + (actions.clamp(-1.0, 1.0) + 1.0) * 0.5 * (self._high - self._low)

    def as_module(self) -> torch.nn.Module:
        return _Unsquash(self._low, self._high)


class _Clip(torch.nn.Module):
    def __init__(self, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(actions, self.high), self.low)


class _Unsquash(_Clip):
    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        return self.low + (actions.clamp(-1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)


def default_module_to_env(action_space: gym.Space, normalize_actions: bool, clip_actions: bool) -> list[dict]:
    """RLlib's default module-to-env pieces for an action space, as connector specs."""
    if not isinstance(action_space, spaces.Box):
        return []
    finite = bool(np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high)))
    if normalize_actions and finite:
        return [{"name": "UnsquashActions", "config": {}}]
    if clip_actions and finite:
        return [{"name": "ClipActions", "config": {}}]
    return []
