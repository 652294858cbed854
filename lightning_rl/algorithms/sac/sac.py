"""Soft Actor-Critic for continuous (tanh-squashed Gaussian) and discrete actions.

Each update trains three parameter groups from one forward pass: the twin critics towards
``r + gamma^k (min_i Q'_i(s', a') - alpha log pi(a'|s'))``, the actor towards
``E[alpha log pi(a|s) - min_i Q_i(s, a)]`` (critics frozen, so only the actor learns from it),
and the entropy temperature ``alpha`` towards the target entropy. Discrete SAC
(Christodoulou, 2019) takes the expectations over actions exactly instead of sampling.

The losses are written out in :mod:`.loss`; they are those of torchrl's ``SACLoss`` and
``DiscreteSACLoss`` (``tests/test_sac.py`` checks them against torchrl on the same networks).
"""

from __future__ import annotations

import abc
import copy
import math
from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces
from tensordict import TensorDict
from torch import nn

from lightning_rl.algorithms.off_policy import OffPolicyAlgorithm, OffPolicyModule, soft_update_
from lightning_rl.algorithms.sac.loss import SACLossConfig, continuous_sac_loss, discrete_sac_loss
from lightning_rl.data.n_step import n_step_transitions
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicyNet, PolicySpec, StochasticPolicy
from lightning_rl.modules.q_networks import QNetwork
from lightning_rl.modules.sac_networks import (
    ContinuousQEnsemble,
    SquashedGaussianActor,
    SquashedGaussianPolicy,
)


class DiscreteQEnsemble(nn.Module):
    """``observation -> Q(s, .)`` of shape ``[num_q, B, A]`` from ``num_q`` Q-networks (any encoder)."""

    def __init__(self, observation_space, action_space, model_config, num_q: int = 2) -> None:
        super().__init__()
        self.members = nn.ModuleList(
            QNetwork(observation_space, action_space, model_config) for _ in range(num_q)
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(obs) for member in self.members])


# Discrete SAC's "auto" target entropy: this fraction of the uniform policy's entropy (RLlib, torchrl).
DISCRETE_TARGET_ENTROPY_SCALE = 0.98


class _SACModuleBase(OffPolicyModule):
    """What both SAC flavours share: critics, target critics, temperature, n-step, target updates."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        gamma: float,
        n_step: int,
        num_q_nets: int,
        initial_alpha: float,
        target_entropy: float,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        self.critic = self.build_critic(observation_space, action_space, model_config, num_q_nets)
        self.target_critic = copy.deepcopy(self.critic)
        self.target_critic.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial_alpha)))
        self.register_buffer("target_entropy", torch.tensor(float(target_entropy)))
        self.gamma = float(gamma)
        self.n_step = int(n_step)
        self.loss_config = SACLossConfig(gamma=self.gamma)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.target_critic.parameters())

    @staticmethod
    @abc.abstractmethod
    def build_critic(
        observation_space: gym.Space, action_space: gym.Space, model_config: DefaultModelConfig, num_q: int
    ) -> nn.Module:
        """The ``num_q`` critics as one module whose outputs are stacked along a leading dim."""

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by loss: critic, actor and temperature (each its own learning rate)."""
        return {
            "critic": self._critic_params,
            "actor": list(self.actor.parameters()),
            "alpha": [self.log_alpha],
        }

    def process_rollout(self, batch: TensorDict) -> TensorDict:
        return n_step_transitions(batch, self.n_step, self.gamma)

    def update_targets(self, tau: float) -> None:
        soft_update_(self._target_params, self._critic_params, tau)

    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()


class SACModule(_SACModuleBase):
    """Continuous SAC: a tanh-squashed Gaussian actor over a bounded 1-D Box and Q(s, a) critics."""

    def __init__(self, observation_space, action_space, model_config, **kwargs: Any) -> None:
        super().__init__(observation_space, action_space, model_config, **kwargs)
        self.actor = SquashedGaussianActor(observation_space, action_space, model_config)

    @staticmethod
    def build_critic(observation_space, action_space, model_config, num_q) -> nn.Module:
        return ContinuousQEnsemble(observation_space, action_space, model_config, num_q)

    def policy_spec(self) -> PolicySpec:
        return self.runner_policy_spec(SquashedGaussianPolicy)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.actor.state_dict()

    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """SAC's loss (:func:`.loss.continuous_sac_loss`): ``(total, |TD errors|, stats)``."""
        return continuous_sac_loss(
            self.actor,
            self.critic,
            self.target_critic,
            batch,
            log_alpha=self.log_alpha,
            target_entropy=self.target_entropy,
            config=self.loss_config,
        )


class DiscreteSACModule(_SACModuleBase):
    """Discrete SAC: a categorical actor and Q(s, .) critics; expectations over actions are exact."""

    def __init__(self, observation_space, action_space, model_config, **kwargs: Any) -> None:
        super().__init__(observation_space, action_space, model_config, **kwargs)
        self.actor = PolicyNet(observation_space, action_space, model_config)

    @staticmethod
    def build_critic(observation_space, action_space, model_config, num_q) -> nn.Module:
        return DiscreteQEnsemble(observation_space, action_space, model_config, num_q)

    def policy_spec(self) -> PolicySpec:
        return self.runner_policy_spec(StochasticPolicy)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.actor.state_dict()

    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Discrete SAC's loss (:func:`.loss.discrete_sac_loss`): ``(total, |TD errors|, stats)``."""
        return discrete_sac_loss(
            self.actor,
            self.critic,
            self.target_critic,
            batch,
            log_alpha=self.log_alpha,
            target_entropy=self.target_entropy,
            config=self.loss_config,
        )


class SAC(OffPolicyAlgorithm):
    """SAC (RLlib's names): twin Q, automatic entropy tuning, continuous or discrete actions.

    Args:
        actor_lr, critic_lr, alpha_lr: learning rates of the three optimizers (None: ``lr``).
        initial_alpha: starting entropy temperature.
        target_entropy: ``"auto"`` (``-action_dim`` for Box actions, ``0.98 log(n)`` for
            Discrete ones) or a number.
        twin_q: two critics and the minimum of their targets (clipped double Q).

    See :class:`~lightning_rl.algorithms.off_policy.OffPolicyAlgorithm` for the replay settings.
    """

    replay_buffer_defaults = {"type": "ReplayBuffer", "capacity": 1_000_000}

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        lr: float = 3e-4,
        actor_lr: float | None = None,
        critic_lr: float | None = None,
        alpha_lr: float | None = None,
        gamma: float = 0.99,
        train_batch_size: int = 256,
        initial_alpha: float = 1.0,
        target_entropy: str | float = "auto",
        twin_q: bool = True,
        tau: float = 5e-3,
        target_network_update_freq: int = 0,
        num_steps_sampled_before_learning_starts: int = 1500,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            env,
            env_config,
            lr=lr,
            gamma=gamma,
            train_batch_size=train_batch_size,
            tau=tau,
            target_network_update_freq=target_network_update_freq,
            num_steps_sampled_before_learning_starts=num_steps_sampled_before_learning_starts,
            **kwargs,
        )

    def validate_hparams(self) -> None:
        super().validate_hparams()
        h = self.hparams
        target = h.target_entropy
        if target != "auto" and (isinstance(target, bool) or not isinstance(target, int | float)):
            raise ConfigError(
                f"target_entropy must be 'auto' or a number, got {target!r} ({type(target).__name__})."
            )
        self.require_positive(initial_alpha=h.initial_alpha)
        for name in ("actor_lr", "critic_lr", "alpha_lr"):
            if h[name] is not None:
                self.require_positive(**{name: h[name]})

    def _target_entropy(self, action_space: gym.Space) -> float:
        target = self.hparams.target_entropy
        if target != "auto":
            return float(target)
        if isinstance(action_space, spaces.Discrete):
            return DISCRETE_TARGET_ENTROPY_SCALE * math.log(int(action_space.n))
        return -float(action_space.shape[0])

    def build_policy_module(self, policy_id: str, observation_space, action_space) -> _SACModuleBase:
        h = self.hparams
        if isinstance(action_space, spaces.Discrete):
            module_class: type[_SACModuleBase] = DiscreteSACModule
        elif isinstance(action_space, spaces.Box):
            module_class = SACModule
        else:
            raise SpaceError(
                f"SAC needs a 1-D Box or a Discrete action space, got {action_space} (policy {policy_id!r})."
            )
        return module_class(
            observation_space,
            action_space,
            self.model_config,
            gamma=h.gamma,
            n_step=h.n_step,
            num_q_nets=2 if h.twin_q else 1,
            initial_alpha=float(h.initial_alpha),
            target_entropy=self._target_entropy(action_space),
        )

    # -- learning ----------------------------------------------------------------------------
    def build_policy_optimizer(self, policy_id: str) -> torch.optim.Optimizer:
        """One Adam over three parameter groups: critics, actor and temperature, each at its own rate.

        The three losses are summed and back-propagated once (their gradients reach disjoint
        parameters), then one step updates all three groups: what three optimizers stepped
        after one forward pass (torchrl's ``SACLoss``) do, at a third of the per-step overhead.
        """
        h = self.hparams
        groups = self.policies[policy_id].parameter_groups()
        rates = {"critic": h.critic_lr or h.lr, "actor": h.actor_lr or h.lr, "alpha": h.alpha_lr or h.lr}
        return self.adam([{"params": groups[name], "lr": rates[name]} for name in groups], lr=h.lr)
