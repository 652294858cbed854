"""DQN's losses on plain tensors: the (double) Q-learning TD loss and C51's distributional loss.

Q-learning, per transition ``(s, a, r, s')`` (n-step: ``r`` summed, ``gamma^k`` per row)::

    a*   = argmax_a Q(s', a)   (double_q: the online network; else the target network)
    y    = r + gamma^k * (1 - terminated) * Q'(s', a*)
    loss = mean(huber(Q(s, a) - y))   (or the squared error; weighted with prioritized replay)

C51 projects ``r + gamma^k * z`` with the target distribution of ``a*`` onto the support and
minimises the cross-entropy to the online distribution of ``a``.

They compute exactly what torchrl's ``DQNLoss`` (TD(0) estimator, ``steps_to_next_obs``
discounting) and ``DistributionalDQNLoss`` compute (``tests/test_dqn.py`` checks both against
torchrl on the same networks and data), without the TensorDict plumbing around every call:
on CartPole-sized networks that plumbing cost more than the network's own forward and
backward passes (``benchmarks/off_policy_update_cost.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from lightning_rl.algorithms.off_policy import discounts, weighted_mean
from lightning_rl.modules.q_networks import QNetwork


@dataclass(frozen=True)
class DQNLossKeys:
    """Where DQN's losses find their inputs in a replayed minibatch. (The prioritized-replay
    weights and the n-step lengths are read by :func:`weighted_mean` and :func:`discounts`.)"""

    observation: str = "observation"
    action: str = "action"
    next_observation: tuple[str, str] = ("next", "observation")
    reward: tuple[str, str] = ("next", "reward")
    terminated: tuple[str, str] = ("next", "terminated")


DQN_KEYS = DQNLossKeys()


def element_loss(td_error: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "huber":
        return F.smooth_l1_loss(td_error, torch.zeros_like(td_error), reduction="none")
    return td_error.pow(2)


def q_learning_loss(
    q_net: QNetwork,
    target_net: QNetwork,
    batch,
    *,
    gamma: float,
    double_q: bool,
    loss_fn: str = "huber",
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, TD errors ``[B]``, stats) of one (double) Q-learning minibatch."""
    keys = DQN_KEYS
    obs, next_obs = batch[keys.observation], batch[keys.next_observation]
    action = batch[keys.action].long().reshape(-1, 1)
    reward = batch[keys.reward].reshape(-1)
    terminated = batch[keys.terminated].reshape(-1)
    if double_q:
        # One online forward over [obs; next_obs]: per-call overhead dominates small networks.
        q_values, next_online = q_net(torch.cat([obs, next_obs])).chunk(2)
    else:
        q_values, next_online = q_net(obs), None
    q_taken = q_values.gather(-1, action).squeeze(-1)
    with torch.no_grad():
        next_target = target_net(next_obs)
        chooser = next_target if next_online is None else next_online.detach()
        next_action = chooser.argmax(-1, keepdim=True)
        next_value = next_target.gather(-1, next_action).squeeze(-1)
        target = reward + discounts(batch, gamma) * next_value * (~terminated)
    td_error = q_taken - target
    loss = weighted_mean(element_loss(td_error, loss_fn), batch)
    stats = {"qf_loss": loss, "qf_mean": q_taken.mean(), "td_error_abs_mean": td_error.abs().mean()}
    return loss, td_error.detach(), stats


def project_distribution(
    next_probs: torch.Tensor,
    reward: torch.Tensor,
    discount: torch.Tensor,
    not_terminated: torch.Tensor,
    support: torch.Tensor,
) -> torch.Tensor:
    """C51's projection of ``reward + discount * z`` (probabilities ``next_probs``) onto ``support``."""
    atoms = support.numel()
    v_min, v_max = float(support[0]), float(support[-1])
    delta = (v_max - v_min) / (atoms - 1)
    shifted = reward.unsqueeze(-1) + (discount * not_terminated).unsqueeze(-1) * support
    position = (shifted.clamp(v_min, v_max) - v_min) / delta
    lower, upper = position.floor().long(), position.ceil().long()
    # When the position hits an atom exactly, lower == upper and both weights below are 0:
    # move one bound so the mass lands on that atom.
    lower = torch.where((upper > 0) & (lower == upper), lower - 1, lower)
    upper = torch.where((lower < atoms - 1) & (lower == upper), upper + 1, upper)
    projected = torch.zeros_like(next_probs)
    projected.scatter_add_(-1, lower, next_probs * (upper.to(position.dtype) - position))
    projected.scatter_add_(-1, upper, next_probs * (position - lower.to(position.dtype)))
    return projected


def distributional_loss(
    q_net: QNetwork,
    target_net: QNetwork,
    batch,
    *,
    gamma: float,
    double_q: bool,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, per-sample cross-entropies ``[B]`` as TD errors, stats) of one C51 minibatch."""
    keys = DQN_KEYS
    obs, next_obs = batch[keys.observation], batch[keys.next_observation]
    action = batch[keys.action].long().reshape(-1)
    reward = batch[keys.reward].reshape(-1)
    terminated = batch[keys.terminated].reshape(-1)
    rows = torch.arange(action.shape[0], device=action.device)
    log_probs = q_net.logits(obs).log_softmax(-1)[rows, action]
    with torch.no_grad():
        next_probs = target_net.logits(next_obs).softmax(-1)
        next_q = (
            q_net(next_obs)
            if double_q
            else target_net.mask_illegal((next_probs * target_net.support).sum(-1), next_obs)
        )
        next_action = next_q.argmax(-1)
        target = project_distribution(
            next_probs[rows, next_action],
            reward,
            discounts(batch, gamma),
            (~terminated).float(),
            q_net.support,
        )
    cross_entropy = -(target * log_probs).sum(-1)
    loss = weighted_mean(cross_entropy, batch)
    q_taken = (log_probs.detach().exp() * q_net.support).sum(-1)
    stats = {"qf_loss": loss, "qf_mean": q_taken.mean(), "td_error_abs_mean": cross_entropy.detach().mean()}
    return loss, cross_entropy.detach(), stats
