"""Exact, fast test envs (in the spirit of torchrl's counting envs)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CountingEnv(gym.Env):
    """obs = [vector_index, steps so far]; reward = 1 per step.

    Episode ``k`` of copy ``i`` ends after ``lengths[(i + k) % len(lengths)]`` steps,
    terminated if ``terminate`` else truncated, so tests know every transition exactly.
    """

    def __init__(self, config: dict | None = None) -> None:
        self.index = int(getattr(config, "vector_index", 0))
        self.worker_index = int(getattr(config, "worker_index", 0))
        config = dict(config or {})
        self.lengths = list(config.get("lengths", [3, 5]))
        self.terminate = bool(config.get("terminate", True))
        self.close_marker_dir = config.get("close_marker_dir")  # close() leaves a file there
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.episode = -1
        self.t = 0

    def _obs(self):
        return np.array([self.index, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        length = self.lengths[(self.index + self.episode) % len(self.lengths)]
        done = self.t >= length
        return self._obs(), 1.0, done and self.terminate, done and not self.terminate, {}

    def close(self):
        if self.close_marker_dir is not None:
            from pathlib import Path

            (Path(self.close_marker_dir) / f"closed-{self.worker_index}-{self.index}").touch()


class FailingEnv(gym.Env):
    """Raises in ``reset`` or ``step`` on purpose, to test error reporting."""

    def __init__(self, config: dict | None = None) -> None:
        config = dict(config or {})
        self.fail_in = config.get("fail_in", "step")
        self.fail_after = int(config.get("fail_after", 0))
        self.steps = 0
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.fail_in == "reset":
            raise RuntimeError("simulator crashed in reset")
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.fail_in == "step" and self.steps > self.fail_after:
            raise RuntimeError("simulator crashed in step")
        return np.zeros(2, np.float32), 0.0, False, False, {}


class TargetEnv(gym.Env):
    """Continuous one-step task: observe a target in [-1, 1], act in [-2, 2]; reward -(a - 2 t)^2.

    The best action is twice the observation, so learning it needs a working Gaussian
    policy, consistent log-probabilities and the unsquashing connector (bounds +-2).
    """

    def __init__(self, config: dict | None = None) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
        self._target = np.zeros(1, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._target = self.np_random.uniform(-1.0, 1.0, (1,)).astype(np.float32)
        return self._target.copy(), {}

    def step(self, action):
        reward = -float((np.asarray(action)[0] - 2.0 * self._target[0]) ** 2)
        return self._target.copy(), reward, True, False, {}


class ActionSpaceEnv(gym.Env):
    """One-step env whose action space is chosen by ``config["kind"]``, to test space errors:
    ``"unbounded"`` (a Box with infinite bounds) or ``"multi_discrete"``."""

    def __init__(self, config: dict | None = None) -> None:
        kind = dict(config or {}).get("kind", "unbounded")
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        if kind == "multi_discrete":
            self.action_space = spaces.MultiDiscrete([2, 3])
        else:
            self.action_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}
