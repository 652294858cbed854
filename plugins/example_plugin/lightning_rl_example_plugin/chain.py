"""A chain MDP: ``length`` states in a row, reward only at the right end."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ChainEnv(gym.Env):
    """Observation: one-hot position; actions: 0 = left, 1 = right; +1 at the end, else 0.

    Its ``__init__`` takes the env config dict, which is all an env entry point needs.
    """

    def __init__(self, config: dict | None = None) -> None:
        config = dict(config or {})
        self.length = int(config.get("length", 6))
        self.max_steps = int(config.get("max_steps", 4 * self.length))
        self.observation_space = spaces.Box(0.0, 1.0, (self.length,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._position = 0
        self._steps = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.length, dtype=np.float32)
        obs[self._position] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._position, self._steps = 0, 0
        return self._obs(), {}

    def step(self, action):
        self._position = (
            min(self.length - 1, self._position + 1) if action == 1 else max(0, self._position - 1)
        )
        self._steps += 1
        terminated = self._position == self.length - 1
        truncated = not terminated and self._steps >= self.max_steps
        return self._obs(), float(terminated), terminated, truncated, {}
