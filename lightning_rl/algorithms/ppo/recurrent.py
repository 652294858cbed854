"""PPO with a memory core (``use_lstm``, ``use_gru`` or ``use_attention`` in ``model_config``).

The runner stores, with every step, the recurrent state it acted from and the state after the
step. On the learner:

* GAE's values come from one batched step per stored state: the runner acted with exactly the
  learner's current weights (synchronous PPO), so these are the true values, with no sequential
  pass over the rollout;
* the loss replays ``max_seq_len`` chunks with the current weights from each chunk's stored
  first state (resetting at episode starts inside it) and computes PPO's loss (:mod:`.loss`)
  averaged only over real steps (``mask``), never over padding.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDict

from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.algorithms.ppo.gae import add_advantages
from lightning_rl.algorithms.ppo.learner_distribution import learner_distribution
from lightning_rl.algorithms.ppo.legacy_state import drop_legacy_loss_state
from lightning_rl.algorithms.ppo.loss import PPO_KEYS, PPOLossConfig, ppo_loss_for_batch
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicySpec
from lightning_rl.modules.recurrent import RecurrentActorCritic, RecurrentStochasticPolicy


class RecurrentPPOModule(PolicyModule):
    """One policy's recurrent actor-critic, its GAE from stored states and its masked loss."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        gamma: float,
        lambda_: float,
        loss_config: PPOLossConfig,
        entropy_coeff: float,
        kl_coeff: float,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        self.model = RecurrentActorCritic(observation_space, action_space, model_config)
        self.gamma, self.lambda_ = gamma, lambda_
        self.loss_config = loss_config
        # Set by PPO at every iteration from ``entropy_coeff_schedule``; not saved.
        self.register_buffer("entropy_coeff", torch.tensor(float(entropy_coeff)), persistent=False)
        self.register_buffer("kl_coeff", torch.tensor(float(kl_coeff)))
        self.register_load_state_dict_pre_hook(drop_legacy_loss_state)

    # -- runner side ---------------------------------------------------------------------------
    def policy_spec(self) -> PolicySpec:
        return RecurrentStochasticPolicy.spec(self.observation_space, self.action_space, self.model_config)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    # -- learner connector ---------------------------------------------------------------------
    def process_rollout(self, batch: TensorDict) -> TensorDict:
        """GAE over ``[num_envs, T]`` with values from the runner's stored states."""
        keys = PPO_KEYS
        value = self.model.values_from_states(batch[keys.observation], batch["recurrent_state"])
        next_value = self.model.values_from_states(
            batch["next", keys.observation], batch["next_recurrent_state"]
        )
        return add_advantages(batch, value, next_value, self.gamma, self.lambda_)

    # -- loss ----------------------------------------------------------------------------------
    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, Any]]:
        """PPO's loss (:mod:`.loss`) over ``[B, L]`` sequences, averaged over real steps only."""
        keys = PPO_KEYS
        observation = batch[keys.observation]
        features = self.model.sequence(observation, batch["is_init"][..., 0], batch["recurrent_state"][:, 0])
        params = self.model.policy_params(features, observation if self.model.masked else None)
        dist = learner_distribution(self.model.distribution, params)
        terms = ppo_loss_for_batch(
            batch,
            dist,
            self.model.value(features),
            self.loss_config,
            entropy_coeff=self.entropy_coeff,
            kl_coeff=self.kl_coeff,
            mask=batch["mask"].float(),
        )
        return terms.total_loss, terms.deferred_stats()
