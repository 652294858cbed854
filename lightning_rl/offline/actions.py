"""Recorded env actions -> the module-side actions an algorithm's network emits.

Files hold what the env received (so they are usable by any algorithm and any tool), while a
network acts in its own space: Discrete actions from 0, Box actions in [-1, 1] when
``normalize_actions`` put an ``UnsquashActions`` connector between module and env. Reading
inverts the module-to-env connectors for that.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lightning_rl.errors import ConfigError

INVERTIBLE = ("UnsquashActions", "ClipActions")


def check_invertible(module_to_env: list[dict[str, Any]]) -> None:
    """One clear error if recorded actions cannot be mapped back through these connectors."""
    for spec in module_to_env:
        if spec.get("name") not in INVERTIBLE:
            raise ConfigError(
                f"Offline training maps recorded env actions back through the module-to-env connectors, "
                f"but {spec.get('name')!r} has no inverse; offline algorithms support {list(INVERTIBLE)}."
            )


def env_to_module_actions(
    actions: np.ndarray, env_action_space: gym.Space, module_to_env: list[dict[str, Any]]
) -> torch.Tensor:
    """Undo ``module_to_env`` (last connector first) on a batch of recorded env actions."""
    check_invertible(module_to_env)
    if isinstance(env_action_space, spaces.Discrete):
        return torch.as_tensor(np.asarray(actions, dtype=np.int64).reshape(-1) - int(env_action_space.start))
    values = np.asarray(actions, dtype=np.float32)
    if isinstance(env_action_space, spaces.Box):
        low = env_action_space.low.astype(np.float32)
        high = env_action_space.high.astype(np.float32)
        for spec in reversed(module_to_env):
            if spec["name"] == "ClipActions":
                values = np.clip(values, low, high)
            else:  # UnsquashActions: [-1, 1] -> [low, high], linearly
                values = np.clip(2.0 * (values - low) / (high - low) - 1.0, -1.0, 1.0)
    return torch.from_numpy(np.array(values, dtype=np.float32))
