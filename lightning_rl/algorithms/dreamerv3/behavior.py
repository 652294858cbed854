"""Actor and critic learned in imagination (the paper's section 4 / eq. 7-11).

From every posterior state of the replayed batch the world model dreams ``horizon_H`` steps
with the actor's actions. On that dream:

* lambda-returns ``R_k = r_{k+1} + gamma c_{k+1} ((1 - lambda) v_{k+1} + lambda R_{k+1})``,
  bootstrapped with the critic at the horizon (``c``: the continue head's probability);
* the critic (two-hot over symexp bins) learns ``R_k`` plus a regulariser towards its own
  slow EMA copy (``critic_ema_decay``; the reference's weight 1);
* the actor maximises ``(R_k - v_k) / max(1, S)`` plus ``entropy_scale`` times its entropy,
  where ``S`` is the EMA of the 5th-95th percentile range of the returns (torchrl's
  ``PercentileValueNorm``); REINFORCE for discrete actions, backpropagation through the
  dynamics for continuous ones (paper v1, RLlib), selectable with ``actor_gradient``;
* every step is weighted by the dream's cumulative discounted continue probability.

Only the actor's and critic's parameters learn here: the dream starts from stopped states,
and where gradients run through the dynamics the world model's and critic's weights are
frozen for that pass, so one backward over all losses trains each network on its own loss.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torchrl.modules import PercentileValueNorm, SymExpTwoHot
from torchrl.objectives import two_hot_cross_entropy

from lightning_rl.algorithms.dreamerv3.model_sizes import ModelDims
from lightning_rl.algorithms.dreamerv3.networks import Actor, MLPHead, gaussian_entropy, init_weights
from lightning_rl.algorithms.dreamerv3.world_model import NUM_BINS, WorldModel


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """No weight gradients for ``modules`` inside (activations still carry gradients)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def lambda_returns(
    reward: torch.Tensor, value: torch.Tensor, cont: torch.Tensor, gamma: float, lambda_: float
) -> torch.Tensor:
    """``R_k`` for ``k = 0 .. H-1`` from ``[H+1, N]`` rewards, values and continue flags
    (index k: the k-th dreamed state; ``reward[k]`` is the reward of arriving there)."""
    discount = gamma * cont[1:]
    returns = [value[-1]]
    for k in reversed(range(reward.shape[0] - 1)):
        returns.append(reward[k + 1] + discount[k] * ((1.0 - lambda_) * value[k + 1] + lambda_ * returns[-1]))
    return torch.stack(returns[::-1][:-1])


def dream_weights(cont: torch.Tensor, gamma: float) -> torch.Tensor:
    """``w_k = c_0 prod_{j=1..k} gamma c_j`` for ``[H+1, N]`` continue flags: how much the dream's
    step k counts (zero after a predicted episode end)."""
    factors = torch.cat([cont[:1], gamma * cont[1:]])
    return torch.cumprod(factors, 0)


class Critic(nn.Module):
    """Model state -> two-hot value distribution (symexp bins); its mean is the value."""

    def __init__(self, feature_size: int, dims: ModelDims) -> None:
        super().__init__()
        self.net = MLPHead(feature_size, NUM_BINS, dims, zero_init=True)
        init_weights(self.net)
        self.net.reset_output()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., NUM_BINS]`` in float32."""
        return self.net(features).float()


class Behavior(nn.Module):
    """Actor, critic, the critic's slow copy, the return normaliser, and their losses."""

    def __init__(
        self,
        feature_size: int,
        action_dim: int,
        discrete: bool,
        dims: ModelDims,
        *,
        return_normalization_decay: float,
    ) -> None:
        super().__init__()
        self.discrete = discrete
        self.actor = Actor(feature_size, action_dim, discrete, dims)
        init_weights(self.actor)
        self.critic = Critic(feature_size, dims)
        self.slow_critic = copy.deepcopy(self.critic)
        self.slow_critic.requires_grad_(False)
        self.two_hot = SymExpTwoHot(NUM_BINS)
        self.return_norm = PercentileValueNorm(
            quantiles=(0.05, 0.95), rate=1.0 - return_normalization_decay, min_scale=1.0
        )

    def value(self, critic: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return self.two_hot.decode(critic(features))

    @torch.no_grad()
    def update_slow_critic(self, decay: float) -> None:
        slow = list(self.slow_critic.parameters())
        torch._foreach_lerp_(slow, list(self.critic.parameters()), 1.0 - decay)

    def entropy(self, features: torch.Tensor) -> torch.Tensor:
        a, b = self.actor(features)
        if self.discrete:
            return -(a.exp() * a).sum(-1)
        return gaussian_entropy(b)

    def loss(
        self,
        world_model: WorldModel,
        h: torch.Tensor,
        z: torch.Tensor,
        start_cont: torch.Tensor,
        *,
        horizon: int,
        gamma: float,
        lambda_: float,
        entropy_scale: float,
        reinforce: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], torch.Tensor]:
        """Actor and critic losses from ``[N]`` start states (detached here).

        Returns ``(actor_loss, critic_loss, stats, dreamed features [H+1, N, F])``.
        """
        h, z = h.detach(), z.detach()
        rssm = world_model.rssm
        if reinforce:
            with torch.no_grad():
                features, actions = rssm.imagine(h, z, self.actor, horizon)
                reward = world_model.reward(features)
                cont = world_model.continue_probability(features)
        else:
            with frozen(world_model):
                features, actions = rssm.imagine(h, z, self.actor, horizon)
                reward = world_model.reward(features)
                cont = world_model.continue_probability(features).detach()
        cont = torch.cat([start_cont.unsqueeze(0), cont[1:]])
        stopped = features.detach()
        critic_logits = self.critic(stopped)
        if reinforce:
            value = self.two_hot.decode(critic_logits.detach())
        else:
            with frozen(self.critic):
                value = self.value(self.critic, features)
        returns = lambda_returns(reward, value, cont, gamma, lambda_)
        weights = dream_weights(cont, gamma)[:-1].detach()
        self.return_norm.update(returns.detach().reshape(-1, 1))
        scale = self.return_norm.scale().squeeze()
        advantage = (returns - value[:-1]) / scale
        entropy = self.entropy(stopped[:-1])
        if reinforce:
            log_probs, _ = self.actor(stopped[:-1])
            log_prob = (log_probs * actions.detach()).sum(-1)
            objective = log_prob * advantage.detach()
        else:
            objective = advantage
        actor_loss = -(weights * (objective + entropy_scale * entropy)).mean()
        target = returns.detach()
        with torch.no_grad():
            slow_value = self.value(self.slow_critic, stopped[:-1])
        critic_logits = critic_logits[:-1]
        critic_loss = (
            weights
            * (
                two_hot_cross_entropy(critic_logits, target, self.two_hot.bins)
                + two_hot_cross_entropy(critic_logits, slow_value, self.two_hot.bins)
            )
        ).mean()
        stats = {
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "actor_entropy": entropy.detach().mean(),
            "dream_return_mean": returns.detach().mean(),
            "dream_value_mean": value.detach().mean(),
            "dream_reward_mean": reward.detach()[1:].mean(),
            "dream_continue_mean": cont[1:].mean(),
            "return_scale": scale.detach(),
        }
        return actor_loss, critic_loss, stats, stopped
