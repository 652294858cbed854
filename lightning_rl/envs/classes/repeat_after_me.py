"""RLlib's RepeatAfterMe: a task only a policy with memory can solve."""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class RepeatAfterMe(gym.Env):
    """Each step shows a random bit (one-hot); the action should repeat the bit shown
    ``repeat_delay`` steps earlier: +1 if it does, -1 if not (0 for the first ``repeat_delay``
    steps). A feed-forward policy sees only the current bit, which is independent of the
    answer, so it scores ~0; a policy with memory scores ``episode_len - repeat_delay``.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        self.delay = int(config.get("repeat_delay", 1))
        self.episode_len = int(config.get("episode_len", 50))
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._history: deque[int] = deque()
        self._t = 0

    def _observe(self) -> np.ndarray:
        bit = int(self.np_random.integers(2))
        self._history.append(bit)
        return np.eye(2, dtype=np.float32)[bit]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._history = deque(maxlen=self.delay + 1)
        self._t = 0
        return self._observe(), {}

    def step(self, action: int):
        reward = 0.0
        if len(self._history) > self.delay:
            reward = 1.0 if int(action) == self._history[0] else -1.0
        self._t += 1
        truncated = self._t >= self.episode_len
        return self._observe(), reward, False, truncated, {}
