"""SAC's objective, written out on plain tensors (Haarnoja et al. 2018; discrete: Christodoulou 2019).

For a minibatch of transitions ``(s, a, r, s')`` (n-step: ``r`` summed and ``gamma^k`` per row)
with temperature ``alpha = exp(log_alpha)`` (no gradient in the critic and actor terms)::

    y            = r + gamma^k * (1 - terminated) * (min_i Q'_i(s', a') - alpha * log pi(a' | s')),
                   a' ~ pi(. | s')
    critic_loss  = 0.5 * mean(sum_i (Q_i(s, a) - y)^2)
    actor_loss   = mean(alpha * log pi(a~ | s) - min_i Q_i(s, a~)),   a~ ~ pi(. | s) (reparameterised;
                   the critics are frozen, so only the actor learns from it)
    alpha_loss   = mean(log_alpha * (H(pi(. | s)) - target_entropy))
    total        = critic_loss + actor_loss + alpha_loss

Discrete SAC takes the expectations over actions exactly: the soft value of ``s'`` is
``sum_a pi(a | s') (min_i Q'_i(s', a) - alpha log pi(a | s'))`` and the actor loss
``mean(sum_a pi(a | s) (alpha log pi(a | s) - min_i Q_i(s, a)))``. With prioritized replay
every mean is weighted by the importance weights (``off_policy.weighted_mean``).

These are the losses of torchrl's ``SACLoss`` and ``DiscreteSACLoss`` (``tests/test_sac.py``
checks them against torchrl on the same networks), without the TensorDict plumbing that cost
several times the networks' own passes on Pendulum-sized networks
(``benchmarks/off_policy_update_cost.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict
from torch import nn

from lightning_rl.algorithms.off_policy import discounts, weighted_mean


@dataclass(frozen=True)
class SACLossKeys:
    """Where SAC's loss finds its inputs in a replayed minibatch. (The prioritized-replay weights
    and the n-step lengths are read by :func:`weighted_mean` and :func:`discounts`.)"""

    observation: str = "observation"
    action: str = "action"
    next_observation: tuple[str, str] = ("next", "observation")
    reward: tuple[str, str] = ("next", "reward")
    terminated: tuple[str, str] = ("next", "terminated")


SAC_KEYS = SACLossKeys()


@dataclass(frozen=True)
class SACLossConfig:
    """The fixed settings of SAC's loss."""

    gamma: float


@contextmanager
def frozen(parameters: list[nn.Parameter]) -> Iterator[None]:
    """No weight gradients for ``parameters`` inside (the actor loss must not train the critics)."""
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


def td_target(batch: TensorDict, next_value: torch.Tensor, config: SACLossConfig) -> torch.Tensor:
    """``r + gamma^k * (1 - terminated) * V'(s')`` per transition, ``[B]``."""
    reward = batch[SAC_KEYS.reward].reshape(-1)
    not_terminated = ~batch[SAC_KEYS.terminated].reshape(-1)
    return reward + discounts(batch, config.gamma) * not_terminated * next_value


def combine(
    batch: TensorDict,
    predictions: torch.Tensor,
    target: torch.Tensor,
    actor_loss: torch.Tensor,
    entropy: torch.Tensor,
    log_alpha: torch.Tensor,
    target_entropy: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Critic regression (``predictions``: ``[num_q, B]``) + actor loss + temperature loss.

    Their gradients reach disjoint parameter groups, so one backward pass serves all three.
    Returns ``(total, |TD error| per transition (for priorities), stats)``.
    """
    errors = predictions - target
    critic_loss = 0.5 * weighted_mean(errors.pow(2).sum(0), batch)
    # The temperature rises while the policy's entropy is below the target, falls above it.
    alpha_loss = weighted_mean(log_alpha * (entropy - target_entropy), batch)
    td_error = errors.detach().abs().amax(0)
    stats = {
        "critic_loss": critic_loss,
        "actor_loss": actor_loss,
        "alpha_loss": alpha_loss,
        "alpha": log_alpha.detach().exp(),
        "entropy": entropy.mean(),
        "qf_mean": predictions[0].detach().mean(),
        "td_error_abs_mean": td_error.mean(),
    }
    return critic_loss + actor_loss + alpha_loss, td_error, stats


def continuous_sac_loss(
    actor: nn.Module,
    critic: nn.Module,
    target_critic: nn.Module,
    batch: TensorDict,
    *,
    log_alpha: torch.Tensor,
    target_entropy: torch.Tensor,
    config: SACLossConfig,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """SAC's loss with a squashed Gaussian ``actor.sample(obs) -> (action, log_prob)`` and
    critics ``critic(obs, action) -> [num_q, B]``."""
    keys = SAC_KEYS
    obs, action, next_obs = batch[keys.observation], batch[keys.action], batch[keys.next_observation]
    size = obs.shape[0]
    alpha = log_alpha.detach().exp()
    # One actor pass over [obs; next_obs]: per-call overhead dominates small networks.
    actions, log_probs = actor.sample(torch.cat([obs, next_obs]))
    new_action, log_prob = actions[:size], log_probs[:size]
    with torch.no_grad():
        next_action, next_log_prob = actions[size:].detach(), log_probs[size:].detach()
        next_q = target_critic(next_obs, next_action).amin(0)
        target = td_target(batch, next_q - alpha * next_log_prob, config)
    predictions = critic(obs, action)
    with frozen(list(critic.parameters())):
        q_new = critic(obs, new_action).amin(0)
    actor_loss = weighted_mean(alpha * log_prob - q_new, batch)
    return combine(batch, predictions, target, actor_loss, -log_prob.detach(), log_alpha, target_entropy)


def discrete_sac_loss(
    actor: nn.Module,
    critic: nn.Module,
    target_critic: nn.Module,
    batch: TensorDict,
    *,
    log_alpha: torch.Tensor,
    target_entropy: torch.Tensor,
    config: SACLossConfig,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Discrete SAC's loss with a categorical ``actor(obs) -> (logits,)`` and critics
    ``critic(obs) -> Q(s, .)`` of shape ``[num_q, B, A]``."""
    keys = SAC_KEYS
    obs, next_obs = batch[keys.observation], batch[keys.next_observation]
    action = batch[keys.action].long().reshape(-1, 1)
    size = obs.shape[0]
    alpha = log_alpha.detach().exp()
    all_log_probs = actor(torch.cat([obs, next_obs]))[0].log_softmax(-1)
    log_probs, probs = all_log_probs[:size], all_log_probs[:size].exp()
    with torch.no_grad():
        next_log_probs = all_log_probs[size:].detach()
        next_q = target_critic(next_obs).amin(0)
        next_value = (next_log_probs.exp() * (next_q - alpha * next_log_probs)).sum(-1)
        target = td_target(batch, next_value, config)
    q_values = critic(obs)
    predictions = q_values.gather(-1, action.expand(q_values.shape[0], -1, -1)).squeeze(-1)
    q_min = q_values.detach().amin(0)
    actor_loss = weighted_mean((probs * (alpha * log_probs - q_min)).sum(-1), batch)
    entropy = -(probs * log_probs).sum(-1).detach()
    return combine(batch, predictions, target, actor_loss, entropy, log_alpha, target_entropy)
