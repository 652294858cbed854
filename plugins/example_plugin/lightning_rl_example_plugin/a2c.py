"""Advantage actor-critic (synchronous A2C), built only from lightning-rl's public API."""

from __future__ import annotations

from typing import Any

import torch
from tensordict.nn import TensorDictModule
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives import A2CLoss
from torchrl.objectives.value import GAE

from lightning_rl import Algorithm, PolicyModule
from lightning_rl.modules import PolicyNet, PolicySpec, StochasticPolicy, ValueNet


class A2CModule(PolicyModule):
    """One policy's actor, critic, GAE and ``A2CLoss``."""

    def __init__(
        self, observation_space, action_space, model_config, *, gamma, lambda_, entropy_coeff, vf_loss_coeff
    ):
        super().__init__(observation_space, action_space, model_config)
        self.policy_net = PolicyNet(observation_space, action_space, model_config)
        self.value_net = ValueNet(observation_space, model_config)
        distribution = self.policy_net.distribution
        keys = list(distribution.param_keys)
        actor = ProbabilisticActor(
            TensorDictModule(self.policy_net, in_keys=["observation"], out_keys=keys),
            in_keys=keys,
            distribution_class=distribution.torch_distribution_class(),
            distribution_kwargs=distribution.torch_distribution_kwargs(),
            return_log_prob=True,
        )
        critic = ValueOperator(self.value_net, in_keys=["observation"])
        self.loss = A2CLoss(
            actor, critic, entropy_coeff=entropy_coeff, critic_coeff=vf_loss_coeff, loss_critic_type="l2"
        )
        self.gae = GAE(gamma=gamma, lmbda=lambda_, value_network=critic)

    def policy_spec(self) -> PolicySpec:
        return self.runner_policy_spec(StochasticPolicy)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.policy_net.state_dict()

    def process_rollout(self, batch):
        return self.gae(batch)


class A2C(Algorithm):
    """One gradient step per sampled batch; GAE advantages; torchrl's ``A2CLoss``."""

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        lr: float = 7e-4,
        gamma: float = 0.99,
        lambda_: float = 1.0,
        vf_loss_coeff: float = 0.5,
        entropy_coeff: float = 0.01,
        grad_clip: float | None = 0.5,
        train_batch_size: int = 80,
        num_epochs: int = 1,
        minibatch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(env, env_config, lr=lr, gamma=gamma, train_batch_size=train_batch_size, **kwargs)

    def build_policy_module(self, policy_id, observation_space, action_space) -> A2CModule:
        h = self.hparams
        return A2CModule(
            observation_space,
            action_space,
            self.model_config,
            gamma=h.gamma,
            lambda_=h.lambda_,
            entropy_coeff=h.entropy_coeff,
            vf_loss_coeff=h.vf_loss_coeff,
        )

    def training_step(self, batch, batch_idx):
        total = 0.0
        for policy_id, policy_batch in self.policy_batches(batch):
            out = self.policies[policy_id].loss(policy_batch)
            loss = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
            self.accumulate_learner_metrics(
                {"policy_loss": out["loss_objective"], "vf_loss": out["loss_critic"], "total_loss": loss},
                policy_id,
            )
            total = total + loss
        return total

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = gradient_clip_val or self.hparams.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def build_optimizers(self):
        return torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr, eps=1e-5, alpha=0.99)
