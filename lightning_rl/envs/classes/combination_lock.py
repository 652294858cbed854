"""A combination lock: a sparse-reward exploration task that drift cannot solve."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CombinationLock(gym.Env):
    """``length`` cells, each with its own correct action (alternating 0/1; ``lock_seed`` picks
    the first).

    The correct action moves one cell on, a wrong one sends the agent back to cell 0; opening
    the lock (moving past the last cell) pays +1 and ends the episode, nothing else pays.
    Observations are one-hot cells. A policy without directed exploration opens the lock only
    by guessing ``length`` bits in a row (probability ``2**-length`` per attempt); a policy that
    seeks unvisited cells learns the combination cell by cell. Config: ``length`` (12),
    ``max_steps`` (100), ``lock_seed`` (0).
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        self.length = int(config.get("length", 12))
        self.max_steps = int(config.get("max_steps", 100))
        # Alternating digits: a policy with a state-independent bias (PPO drifts into one even
        # without reward) opens it with probability at most 2**-length.
        self.combination = (np.arange(self.length) + int(config.get("lock_seed", 0))) % 2
        self.observation_space = spaces.Box(0.0, 1.0, (self.length,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.position = 0
        self.steps = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.length, dtype=np.float32)
        obs[self.position] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position, self.steps = 0, 0
        return self._obs(), {}

    def step(self, action: int):
        self.steps += 1
        opened = False
        if int(action) == self.combination[self.position]:
            if self.position == self.length - 1:
                opened = True
            else:
                self.position += 1
        else:
            self.position = 0
        truncated = not opened and self.steps >= self.max_steps
        return self._obs(), float(opened), opened, truncated, {}
