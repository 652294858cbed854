"""Learner connectors: pieces that rewrite a sampled batch on the learner, before the algorithm's
own processing (GAE, n-step, V-trace). Intrinsic-reward exploration lives here, so it works with
any algorithm whose ``process_rollout`` goes through :meth:`Algorithm.process_rollout`.

* :class:`CountBasedCuriosity`: ``coeff / visits`` of each step's observation, counted step
  by step (RLlib's count-based curiosity example connector, same formula);
* :class:`RND`: random network distillation (Burda et al., 2018) with torchrl's ``RNDLoss``:
  the intrinsic reward is the error of a trained predictor of a frozen random network.

Both add their bonus to ``("next", "reward")`` and keep it in ``("next", "intrinsic_reward")``.
"""

from __future__ import annotations

import abc
from collections import Counter
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict
from torch import nn

from lightning_rl.connectors.base import Connector
from lightning_rl.errors import ConfigError, SpaceError


class LearnerConnector(Connector, abc.ABC):
    """Base: ``setup`` receives the module-side spaces; ``__call__`` rewrites one policy's batch."""

    seam: ClassVar[str | None] = "learner"

    def setup(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Check the spaces and build whatever the connector needs."""

    @abc.abstractmethod
    def __call__(self, batch: TensorDict) -> TensorDict: ...


def _add_intrinsic(batch: TensorDict, bonus: torch.Tensor) -> TensorDict:
    bonus = bonus.reshape(batch["next", "reward"].shape).to(batch["next", "reward"].dtype)
    batch["next", "intrinsic_reward"] = bonus
    batch["next", "reward"] = batch["next", "reward"] + bonus
    return batch


class CountBasedCuriosity(LearnerConnector):
    """RLlib's count-based curiosity: the reward of every step gets
    ``intrinsic_reward_coeff / n``, where ``n`` is the lifetime count of that step's (current)
    observation, counted step by step in time order, this step included.

    So the first visit to an observation earns the full coefficient, the second half of it, and
    so on; visits later in the same batch earn less than earlier ones, exactly as RLlib's
    connector, which walks each episode's observations in order. ``obs_decimals`` rounds
    continuous observations before counting (None, the default, counts them exactly as RLlib).
    """

    def __init__(
        self,
        intrinsic_reward_coeff: float = 1.0,
        obs_decimals: int | None = None,
        max_distinct_observations: int = 1_000_000,
    ) -> None:
        self.intrinsic_reward_coeff = float(intrinsic_reward_coeff)
        self.obs_decimals = None if obs_decimals is None else int(obs_decimals)
        # The count table grows by one entry per distinct observation: bounded, so that exact
        # counting of continuous observations (every step distinct) stops with a clear error
        # instead of growing until the learner runs out of memory.
        self.max_distinct_observations = int(max_distinct_observations)
        if self.max_distinct_observations < 1:
            raise ConfigError(
                "CountBasedCuriosity max_distinct_observations must be >= 1, "
                f"got {max_distinct_observations!r}"
            )
        self._counts: Counter = Counter()

    def setup(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        if not isinstance(observation_space, spaces.Box):
            raise SpaceError(
                f"CountBasedCuriosity counts Box observations, got {observation_space}; add "
                "FlattenObservations (e.g. one-hot Discrete states) to the env-to-module connectors."
            )

    def __call__(self, batch: TensorDict) -> TensorDict:
        obs = batch["observation"]
        # Batch dims [num_envs, T] (or flat) in row-major order: each env copy's steps in time order.
        rows = obs.reshape(-1, *obs.shape[batch.batch_dims :]).reshape(batch.numel(), -1).cpu().numpy()
        if self.obs_decimals is not None:
            rows = np.round(rows, self.obs_decimals)
        bonus = np.empty(len(rows), dtype=np.float64)
        for i, row in enumerate(rows):
            key = tuple(row.tolist())
            if key not in self._counts and len(self._counts) >= self.max_distinct_observations:
                raise ConfigError(
                    f"CountBasedCuriosity has counted {len(self._counts):,} distinct observations "
                    f"(max_distinct_observations={self.max_distinct_observations:,}); continuous "
                    "observations are almost never seen twice, so counting them exactly only grows "
                    "the table: round them with obs_decimals=... or raise max_distinct_observations."
                )
            self._counts[key] += 1
            bonus[i] = self.intrinsic_reward_coeff / self._counts[key]
        return _add_intrinsic(batch, torch.as_tensor(bonus))

    def get_state(self) -> dict[str, Any]:
        return {"keys": [list(k) for k in self._counts], "counts": list(self._counts.values())}

    def set_state(self, state: dict[str, Any]) -> None:
        if state:
            self._counts = Counter({tuple(k): c for k, c in zip(state["keys"], state["counts"], strict=True)})


class RND(LearnerConnector):
    """Random network distillation: bonus = the predictor's squared error on the next observation,
    divided by a running std of bonuses; the predictor trains on every batch (torchrl ``RNDLoss``)."""

    def __init__(
        self,
        intrinsic_reward_coeff: float = 1.0,
        embedding_dim: int = 32,
        hidden: int = 64,
        lr: float = 1e-3,
        updates_per_batch: int = 4,
    ) -> None:
        self.intrinsic_reward_coeff = float(intrinsic_reward_coeff)
        self.embedding_dim, self.hidden, self.lr = int(embedding_dim), int(hidden), float(lr)
        self.updates_per_batch = int(updates_per_batch)
        self._bonus_var = 1.0

    def setup(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        from torchrl.objectives import RNDLoss

        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise SpaceError(f"RND needs a flat Box observation space, got {observation_space}")
        dim = int(observation_space.shape[0])

        def network() -> nn.Module:
            return nn.Sequential(
                nn.Linear(dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.embedding_dim)
            )

        self.predictor, target = network(), network()
        self.loss = RNDLoss(self.predictor, target, update_fraction=1.0)
        self.optimizer = torch.optim.Adam(self.predictor.parameters(), lr=self.lr)

    def _error(self, obs: torch.Tensor) -> torch.Tensor:
        return (self.loss.predictor_network(obs) - self.loss.target_network(obs)).pow(2).mean(-1)

    def __call__(self, batch: TensorDict) -> TensorDict:
        next_obs = batch["next", "observation"].reshape(-1, batch["next", "observation"].shape[-1]).float()
        with torch.no_grad():
            bonus = self._error(next_obs)
        finite_bonus = bonus[torch.isfinite(bonus)]
        if len(finite_bonus):  # the running scale, like the predictor, learns from finite rows only
            second_moment = float(finite_bonus.var(unbiased=False) + finite_bonus.mean() ** 2)
            self._bonus_var = 0.99 * self._bonus_var + 0.01 * second_moment
        # The predictor learns only from finite observations: one NaN row (a broken env step)
        # would turn its weights into NaN for good and every later bonus with them. That row's own
        # bonus stays NaN, so the learner's non-finite guard refuses the update it reaches.
        finite_rows = next_obs[torch.isfinite(next_obs).all(-1)]
        with torch.enable_grad():
            for _ in range(self.updates_per_batch if len(finite_rows) else 0):
                loss = self.loss(
                    TensorDict({("next", "observation"): finite_rows}, batch_size=[finite_rows.shape[0]])
                )
                self.optimizer.zero_grad()
                loss["loss_predictor"].backward()
                self.optimizer.step()
        return _add_intrinsic(batch, self.intrinsic_reward_coeff * bonus / np.sqrt(self._bonus_var))

    def get_state(self) -> dict[str, Any]:
        return {
            "predictor": self.loss.predictor_network.state_dict(),
            "target": self.loss.target_network.state_dict(),
            "bonus_var": self._bonus_var,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state:
            self.loss.predictor_network.load_state_dict(state["predictor"])
            self.loss.target_network.load_state_dict(state["target"])
            self._bonus_var = float(state["bonus_var"])
