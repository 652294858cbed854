"""An env that crashes or stalls at random, for testing fault tolerance (RLlib's CartPoleCrashing)."""

from __future__ import annotations

import os
import time
from typing import Any

import gymnasium as gym
import numpy as np


class EnvCrashed(RuntimeError):
    """The simulated crash."""


class CrashingEnv(gym.Wrapper):
    """Wraps a gymnasium env (``env``, default CartPole-v1) and fails on purpose.

    Config: ``p_crash`` (probability that a step raises), ``p_crash_reset`` (that a reset raises),
    ``p_stall_reset`` (that a reset hangs for ``stall_seconds``). Each env copy draws from its own
    random stream (worker, vector index and process id), so a restarted runner does not repeat
    the crash it just had.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        worker = getattr(config, "worker_index", 0)
        vector = getattr(config, "vector_index", 0)
        config = dict(config or {})
        super().__init__(gym.make(config.get("env", "CartPole-v1"), disable_env_checker=True))
        self.p_crash = float(config.get("p_crash", 0.0))
        self.p_crash_reset = float(config.get("p_crash_reset", 0.0))
        self.p_stall_reset = float(config.get("p_stall_reset", 0.0))
        self.stall_seconds = float(config.get("stall_seconds", 3600.0))
        self._rng = np.random.default_rng([int(config.get("seed", 0)), worker, vector, os.getpid()])

    def reset(self, **kwargs: Any):
        if self._rng.random() < self.p_crash_reset:
            raise EnvCrashed("simulated crash in reset()")
        if self._rng.random() < self.p_stall_reset:
            time.sleep(self.stall_seconds)
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        if self._rng.random() < self.p_crash:
            raise EnvCrashed("simulated crash in step()")
        return self.env.step(action)
