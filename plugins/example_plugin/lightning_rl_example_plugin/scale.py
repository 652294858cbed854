"""A stateless env-to-module connector: observations times a constant."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lightning_rl.connectors import EnvToModule
from lightning_rl.errors import SpaceError


class ScaleObservations(EnvToModule):
    """``obs * scale`` for float Box observations."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def setup(self, observation_space: gym.Space) -> gym.Space:
        if not isinstance(observation_space, spaces.Box):
            raise SpaceError(f"ScaleObservations needs a Box observation space, got {observation_space}")
        low = np.minimum(observation_space.low * self.scale, observation_space.high * self.scale)
        high = np.maximum(observation_space.low * self.scale, observation_space.high * self.scale)
        return spaces.Box(
            low.astype(np.float32), high.astype(np.float32), observation_space.shape, np.float32
        )

    def __call__(self, obs, *, env_ids=None, update=True):
        return obs.float() * self.scale

    def as_module(self) -> torch.nn.Module:
        return _Scale(self.scale)


class _Scale(torch.nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.float() * self.scale
