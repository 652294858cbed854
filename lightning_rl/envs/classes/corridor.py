"""A corridor to walk to the end of (RLlib's ``SimpleCorridor``), configurable by env_config."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CorridorEnv(gym.Env):
    """Start at 0, reach ``corridor_length``; actions 0 = left, 1 = right.

    Reward is ``step_penalty`` (default -0.1) per step and ``+1`` at the end; episodes are
    truncated after ``max_steps``. ``step_penalty=0`` makes it a sparse-reward exploration task.
    The constructor takes the env config dict, which makes the class itself a valid
    ``lightning_rl.envs`` entry point.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        self.corridor_length = int(config.get("corridor_length", 5))
        self.max_steps = int(config.get("max_steps", 100))
        # -0.1 (RLlib's corridor) guides the walk; 0.0 makes the reward sparse: only the end pays.
        self.step_penalty = float(config.get("step_penalty", -0.1))
        if self.corridor_length < 1:
            raise ValueError(f"corridor_length must be >= 1, got {self.corridor_length}")
        self.observation_space = spaces.Box(0.0, float(self.corridor_length), (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.position = 0
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = 0
        self.steps = 0
        return np.array([self.position], dtype=np.float32), {}

    def step(self, action: int):
        if action == 0:
            self.position = max(0, self.position - 1)
        elif action == 1:
            self.position += 1
        else:
            raise ValueError(f"Invalid action {action!r} for Discrete(2)")
        self.steps += 1
        terminated = self.position >= self.corridor_length
        truncated = not terminated and self.steps >= self.max_steps
        reward = 1.0 if terminated else self.step_penalty
        return np.array([self.position], dtype=np.float32), reward, terminated, truncated, {}
