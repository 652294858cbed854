"""PPO with a memory core (``use_lstm``, ``use_gru`` or ``use_attention`` in ``model_config``).

The runner stores, with every step, the recurrent state it acted from and the state after the
step. On the learner:

* GAE's values come from one batched step per stored state: the runner acted with exactly the
  learner's current weights (synchronous PPO), so these are the true values, with no sequential
  pass over the rollout;
* the loss replays ``max_seq_len`` chunks with the current weights from each chunk's stored
  first state (resetting at episode starts inside it), through torchrl's ``ClipPPOLoss`` with
  per-element reduction, and averages only over real steps (``mask``), never over padding.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value.functional import vec_generalized_advantage_estimate

from lightning_rl.algorithms.kl_penalty import k3_kl
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy import PolicySpec
from lightning_rl.modules.recurrent import RecurrentActorCritic, RecurrentStochasticPolicy


class _PolicyHead(nn.Module):
    def __init__(self, model: RecurrentActorCritic) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, observation: Any = None) -> tuple[torch.Tensor, ...]:
        return self.model.policy_params(features, observation)


class _ValueHead(nn.Module):
    def __init__(self, model: RecurrentActorCritic) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.value(features)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    values = values.reshape(mask.shape)
    return (values * mask).sum() / mask.sum().clamp_min(1)


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
        clip_param: float,
        vf_clip_param: float | None,
        vf_loss_coeff: float,
        entropy_coeff: float,
        use_entropy: bool,
        normalize_advantages: bool,
        kl_coeff: float,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        self.model = RecurrentActorCritic(observation_space, action_space, model_config)
        self.gamma, self.lambda_ = gamma, lambda_
        self.normalize_advantages = normalize_advantages
        distribution = self.model.distribution
        param_keys = list(distribution.param_keys)
        in_keys = ["features", "observation"] if self.model.masked else ["features"]
        self.actor = ProbabilisticActor(
            TensorDictModule(_PolicyHead(self.model), in_keys=in_keys, out_keys=param_keys),
            in_keys=param_keys,
            distribution_class=distribution.torch_distribution_class(),
            distribution_kwargs=distribution.torch_distribution_kwargs(),
            return_log_prob=True,
        )
        self.critic = ValueOperator(_ValueHead(self.model), in_keys=["features"])
        self.loss = ClipPPOLoss(
            self.actor,
            self.critic,
            clip_epsilon=clip_param,
            entropy_bonus=use_entropy,
            entropy_coeff=entropy_coeff,
            critic_coeff=vf_loss_coeff,
            loss_critic_type="l2",
            normalize_advantage=False,  # done over real steps only, below
            clip_value=vf_clip_param,
            reduction="none",
            functional=False,
        )
        self.register_buffer("kl_coeff", torch.tensor(float(kl_coeff)))

    # -- runner side ---------------------------------------------------------------------------
    def policy_spec(self) -> PolicySpec:
        return RecurrentStochasticPolicy.spec(self.observation_space, self.action_space, self.model_config)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    # -- learner connector ---------------------------------------------------------------------
    def process_rollout(self, batch: TensorDict) -> TensorDict:
        """GAE over ``[num_envs, T]`` with values from the runner's stored states."""
        value = self.model.values_from_states(batch["observation"], batch["recurrent_state"])
        next_value = self.model.values_from_states(
            batch["next", "observation"], batch["next_recurrent_state"]
        )
        advantage, value_target = vec_generalized_advantage_estimate(
            self.gamma,
            self.lambda_,
            value,
            next_value,
            batch["next", "reward"],
            batch["next", "done"],
            batch["next", "terminated"],
            time_dim=-2,
        )
        batch["state_value"] = value
        batch["advantage"] = advantage
        batch["value_target"] = value_target
        return batch

    # -- loss ----------------------------------------------------------------------------------
    def compute_loss(self, batch: TensorDict, use_kl_loss: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        """Masked clipped-surrogate, value and entropy losses over ``[B, L]`` sequences."""
        mask = batch["mask"].float()
        features = self.model.sequence(
            batch["observation"], batch["is_init"][..., 0], batch["recurrent_state"][:, 0]
        )
        td = batch.clone(False)
        td["features"] = features
        if self.normalize_advantages:
            advantage = td["advantage"].squeeze(-1)
            mean = masked_mean(advantage, mask)
            std = masked_mean((advantage - mean) ** 2, mask).sqrt()
            td["advantage"] = ((advantage - mean) / (std + 1e-8)).unsqueeze(-1)
        out = self.loss(td)
        policy_loss = masked_mean(out["loss_objective"], mask)
        vf_loss = masked_mean(out["loss_critic"], mask)
        total = policy_loss + vf_loss
        stats: dict[str, Any] = {
            "policy_loss": policy_loss,
            "vf_loss": vf_loss,
            "mean_kl_loss": out["kl_approx"],
        }
        if "loss_entropy" in out:
            entropy_loss = masked_mean(out["loss_entropy"], mask)
            total = total + entropy_loss
            stats["entropy"] = out["entropy"]
        if use_kl_loss:
            params = self.model.policy_params(features, td["observation"] if self.model.masked else None)
            log_ratio = self.model.distribution.log_prob(params, td["action"]) - td["action_log_prob"]
            kl = masked_mean(k3_kl(log_ratio), mask)
            total = total + self.kl_coeff * kl
            stats["kl"] = kl
            stats["kl_coeff"] = self.kl_coeff
        stats["total_loss"] = total
        return total, stats
