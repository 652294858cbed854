"""An env that crashes, stalls or emits NaN at random, for testing fault tolerance (RLlib's
CartPoleCrashing)."""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec


class EnvCrashed(RuntimeError):
    """The simulated crash."""


class CrashingEnv(gym.Wrapper):
    """Wraps a gymnasium env (``env``, default CartPole-v1) and fails on purpose.

    Config: ``p_crash`` (probability that a step raises), ``p_crash_reset`` (that a reset raises),
    ``p_stall_reset`` (that a reset hangs for ``stall_seconds``), ``p_nan_reward`` and
    ``p_nan_obs`` (that a step returns a NaN reward / a NaN in the observation). Each env copy
    draws from its own random stream (config ``seed``, worker, vector index and how many times
    this process built that copy; plus the process id in a recreated runner), so a rebuilt copy
    or a restarted runner does not repeat the crash it just had, while a fresh run with the same
    seeds draws the same crashes.
    """

    _incarnations: ClassVar[dict[tuple[int, int, int], int]] = {}  # copies built per key, this process

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        context = config
        worker = getattr(config, "worker_index", 0)
        vector = getattr(config, "vector_index", 0)
        config = dict(config or {})
        self._spec_config = dict(config)
        super().__init__(gym.make(config.get("env", "CartPole-v1"), disable_env_checker=True))
        self.p_crash = float(config.get("p_crash", 0.0))
        self.p_crash_reset = float(config.get("p_crash_reset", 0.0))
        self.p_stall_reset = float(config.get("p_stall_reset", 0.0))
        self.stall_seconds = float(config.get("stall_seconds", 3600.0))
        self.p_nan_reward = float(config.get("p_nan_reward", 0.0))
        self.p_nan_obs = float(config.get("p_nan_obs", 0.0))
        key = (int(config.get("seed", 0)), int(worker), int(vector))
        incarnation = CrashingEnv._incarnations.get(key, 0)
        CrashingEnv._incarnations[key] = incarnation + 1
        stream = [*key, incarnation]
        if getattr(context, "recreated_worker", False):
            stream.append(os.getpid())
        self._rng = np.random.default_rng(stream)

    @property
    def spec(self) -> EnvSpec:
        """How to rebuild this env (gymnasium's ``check_env`` and ``spec.make()`` use it): itself
        with its config, not the inner env plus a wrapper, since it builds its inner env itself."""
        return EnvSpec(
            id="CrashingEnv",
            entry_point=f"{__name__}:rebuild_crashing_env",
            kwargs={"config": dict(self._spec_config)},
        )

    def reset(self, **kwargs: Any):
        if self._rng.random() < self.p_crash_reset:
            raise EnvCrashed("simulated crash in reset()")
        if self._rng.random() < self.p_stall_reset:
            time.sleep(self.stall_seconds)
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        if self._rng.random() < self.p_crash:
            raise EnvCrashed("simulated crash in step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.p_nan_reward and self._rng.random() < self.p_nan_reward:
            reward = float("nan")
        if self.p_nan_obs and self._rng.random() < self.p_nan_obs:
            obs = np.array(obs, dtype=np.float32)
            obs[0] = np.nan
        return obs, reward, terminated, truncated, info


def rebuild_crashing_env(config: dict[str, Any] | None = None) -> CrashingEnv:
    """:attr:`CrashingEnv.spec`'s entry point (a function: gymnasium reads a class's
    ``metadata``, which a wrapper class only has per instance)."""
    return CrashingEnv(config)
