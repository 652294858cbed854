"""Reward scaling on the learner: rewards divided by the running std of the discounted return.

PPO's published MuJoCo settings (the PPO paper's code, SB3's ``VecNormalize(norm_reward=True)``,
CleanRL's ``gym.wrappers.NormalizeReward``) all train on rewards scaled this way: Hopper's
returns reach the hundreds, so without it the value loss is ~10^4 times the policy loss, the
global-norm gradient clip (0.5) then shrinks the policy's step to almost nothing, and the critic
needs many iterations to catch up with the return's scale.

Done here, as a learner connector, rather than as an env wrapper: the env runners, the
episode returns they report and evaluation all keep the true rewards; only the batch the loss
(and GAE) sees is scaled. The statistics are the learner's state, saved in checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDict

from lightning_rl.connectors.env_to_module import RunningMeanStd
from lightning_rl.connectors.learner import LearnerConnector
from lightning_rl.errors import ConfigError


class NormalizeRewards(LearnerConnector):
    """``reward / sqrt(Var[G] + epsilon)``, clipped to ``[-clip, clip]``, where ``G`` is each env
    copy's running discounted return ``G <- gamma * G + r`` (reset after its episode ends).

    The rule of gymnasium's ``NormalizeReward`` and SB3's ``VecNormalize``: the variance is a
    running estimate over every step's ``G`` seen so far, updated with the batch before it is
    scaled. Rows of the ``[num_envs, T]`` batch are env copies in time order; each row's ``G``
    carries over to the next batch (the runners continue their episodes), and starts again from
    zero when the number of rows changes. ``gamma`` should be the algorithm's.
    """

    def __init__(self, gamma: float = 0.99, epsilon: float = 1e-8, clip: float = 10.0) -> None:
        for name, value, low, high in (("gamma", gamma, 0.0, 1.0), ("epsilon", epsilon, 0.0, math.inf)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ConfigError(
                    f"NormalizeRewards {name} must be a number in [{low}, {high}], got {value!r}."
                )
        if isinstance(clip, bool) or not isinstance(clip, int | float) or not clip > 0:
            raise ConfigError(f"NormalizeRewards clip must be a positive number, got {clip!r}.")
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.clip = float(clip)
        self._stats = RunningMeanStd(shape=())
        self._returns: torch.Tensor | None = None

    def setup(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Any spaces: only rewards are read."""

    def __call__(self, batch: TensorDict) -> TensorDict:
        reward = batch["next", "reward"]
        done = batch["next", "done"]
        rewards = reward.reshape(batch.shape[0], -1) if batch.batch_dims > 1 else reward.reshape(1, -1)
        dones = done.reshape(rewards.shape)
        rows = rewards.shape[0]
        if self._returns is None or self._returns.shape[0] != rows:
            self._returns = torch.zeros(rows, dtype=torch.float64)
        returns = torch.empty(rewards.shape, dtype=torch.float64)
        running = self._returns
        rewards64, not_done = rewards.to(torch.float64), ~dones
        for t in range(rewards.shape[1]):
            running = running * self.gamma + rewards64[:, t]
            returns[:, t] = running
            running = running * not_done[:, t]
        self._returns = running
        self._stats.update(returns.reshape(-1))
        scale = 1.0 / math.sqrt(float(self._stats.var) + self.epsilon)
        batch["next", "reward"] = (reward * scale).clamp(-self.clip, self.clip)
        return batch

    def get_state(self) -> dict[str, Any]:
        return {
            "stats": self._stats.to_dict(),
            "returns": None if self._returns is None else self._returns.tolist(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state:
            self._stats = RunningMeanStd.from_dict(state["stats"])
            returns = state.get("returns")
            self._returns = None if returns is None else torch.tensor(returns, dtype=torch.float64)
