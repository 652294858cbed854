"""CQL's objective, written out on plain tensors (Kumar et al. 2020, "CQL(H)"; RLlib's names).

Continuous actions: SAC's losses on the offline minibatch plus the conservative penalty. With
temperature ``alpha = exp(log_alpha)`` (no gradient outside the temperature loss), twin critics
``Q_1, Q_2``, target critics ``Q'_i`` and ``a' ~ pi(. | s')``::

    y            = r + gamma * (1 - terminated) * (min_i Q'_i(s', a') [- alpha log pi(a' | s')])
                   (the bracket only without ``deterministic_backup``)
    critic_loss  = mean(sum_i (Q_i(s, a) - y)^2)
    penalty_i(s) = min_q_weight * (T * mean_k logsumexp_j((Q_i(s_j, a_jk) - log p_j(a_jk)) / T)
                                   - Q_i(s, a))
    cql_loss     = mean(sum_i penalty_i(s))                  (Lagrangian: see below)
    actor_loss   = mean(alpha log pi(a~ | s) - min_i Q_i(s, a~)),  a~ ~ pi(. | s), critics frozen
    bc_loss      = mean(alpha log pi(a~ | s) - log pi(a | s))   (the first ``bc_iters`` updates)
    alpha_loss   = mean(-log_alpha * (log pi(a~ | s) + target_entropy))
    total        = (bc_loss or actor_loss) + critic_loss + cql_loss + alpha_loss

(``bc_loss`` and ``actor_loss`` each take their own draw ``a~``; ``alpha_loss`` the actor's.)

The penalty pushes Q down on actions the data does not hold and up on the data's own: for
each state it draws ``num_actions`` (k) actions of three kinds j, each scored by
importance sampling (Q minus the log-density it was drawn with): uniform actions over the
action bounds (density ``1 / volume``), the current policy's actions at ``s`` and at ``s'``
(log-probabilities, no gradient; the policy is not trained by the penalty). ``s_j`` is the
state the kind's action is scored at: ``s`` for the uniform and current-policy actions, ``s'``
for the next-state ones. Two details follow torchrl's ``CQLLoss``, which this module replaced
(``tests/test_loss_cql.py`` checks it against torchrl on the same networks), and differ from
RLlib's and the paper's code: the ``logsumexp`` runs over the three kinds of each draw k and
is averaged over the draws (theirs: one ``logsumexp`` over all ``3 k`` actions of a state,
larger by about ``log k``, same direction), and the next-state actions are scored at ``s'``
(theirs: at ``s``). Changing either changes what the benchmarks measured
(``benchmarks/offline_pendulum_cql.py``), so it waits for a rerun of them.

Lagrangian form (``lagrangian=True``): the weight of the penalty is tuned by dual gradient
descent: ``alpha' = exp(log_alpha')`` (at most 1e6) multiplies ``penalty_i - lagrangian_thresh``
in the critics' loss (no gradient to ``alpha'`` there), and ``alpha'`` minimises
``-0.5 alpha' sum_i (mean(penalty_i) - lagrangian_thresh)`` (no gradient to the critics), so
it rises while the gap exceeds the threshold. (torchrl's ``CQLLoss`` trains ``alpha'`` the same
way but never applies it to the critics.)

Discrete actions (one Q-network ``Q`` and its target ``Q'``)::

    y            = r + gamma * (1 - terminated) * max_a Q'(s', a)
    critic_loss  = 0.5 * mean((Q(s, a) - y)^2)
    cql_loss     = mean(logsumexp_a Q(s, a) - Q(s, a_data))
    total        = critic_loss + min_q_weight * cql_loss

Draws happen in torchrl's order (``a'``, uniform, policy at ``s``, policy at ``s'``, the
behaviour-cloning draw, the actor's draw), so both see the same samples under one seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict
from torch import nn
from torch.nn import functional as F

from lightning_rl.algorithms.sac.loss import frozen

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
# The largest |tanh| a data action may have before atanh (torchrl's safe atanh for float32).
_ATANH_LIMIT = 1.0 - torch.finfo(torch.float32).resolution
ALPHA_PRIME_MAX = 1e6


@dataclass(frozen=True)
class CQLLossKeys:
    """Where CQL's loss finds its inputs in an offline minibatch."""

    observation: str = "observation"
    action: str = "action"
    next_observation: tuple[str, str] = ("next", "observation")
    reward: tuple[str, str] = ("next", "reward")
    terminated: tuple[str, str] = ("next", "terminated")


CQL_KEYS = CQLLossKeys()


@dataclass(frozen=True)
class CQLLossConfig:
    """The fixed settings of continuous CQL's loss (RLlib's names)."""

    gamma: float
    temperature: float
    num_actions: int
    min_q_weight: float
    deterministic_backup: bool
    lagrangian: bool
    lagrangian_thresh: float


@dataclass(frozen=True)
class DiscreteCQLLossConfig:
    """The fixed settings of discrete CQL's loss."""

    gamma: float
    min_q_weight: float


def td_target(batch: TensorDict, next_value: torch.Tensor, gamma: float) -> torch.Tensor:
    """``r + gamma * (1 - terminated) * V(s')`` per row, ``[B]`` (offline rows are one step)."""
    reward = batch[CQL_KEYS.reward].reshape(-1)
    not_terminated = ~batch[CQL_KEYS.terminated].reshape(-1).bool()
    return reward + gamma * not_terminated * next_value


def data_log_prob(actor: nn.Module, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """``log pi(a | s)`` of given actions under the squashed Gaussian ``actor`` (``[B]``).

    The action is mapped back through the bounds and ``tanh`` (clamped just inside +-1, so an
    action on the boundary scores finitely), then scored like ``actor.sample`` scores its own.
    """
    loc, log_std = actor(obs)
    squashed = ((action - actor.action_bias) / actor.action_scale).clamp(-_ATANH_LIMIT, _ATANH_LIMIT)
    pre_tanh = torch.atanh(squashed)
    gaussian = (-0.5 * ((pre_tanh - loc) / log_std.exp()).pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
    log_det = (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)
    return gaussian - log_det - actor.log_scale_sum


def conservative_penalty(
    actor: nn.Module,
    critic: nn.Module,
    obs: torch.Tensor,
    next_obs: torch.Tensor,
    data_q: torch.Tensor,
    config: CQLLossConfig,
) -> torch.Tensor:
    """``penalty_i(s)`` per critic and row, ``[num_q, B]`` (see the module docstring)."""
    size, draws = obs.shape[0], config.num_actions
    scale, bias = actor.action_scale, actor.action_bias
    # Uniform actions over the bounds: log-density -sum(log(high - low)).
    uniform = torch.empty(size * draws, scale.shape[0], dtype=obs.dtype, device=obs.device).uniform_(-1, 1)
    uniform = uniform * scale + bias
    uniform_log_density = -torch.log(2 * scale).sum().expand(size * draws)
    repeated_obs = obs.repeat_interleave(draws, dim=0)
    repeated_next_obs = next_obs.repeat_interleave(draws, dim=0)
    with torch.no_grad():
        current, current_log_prob = actor.sample(repeated_obs)
        following, following_log_prob = actor.sample(repeated_next_obs)
    # One critic pass over the three kinds: [num_q, 3, B, draws]. (The next-state actions are
    # scored at s', as torchrl does; the paper scores them at s.)
    q = critic(
        torch.cat([repeated_obs, repeated_obs, repeated_next_obs]), torch.cat([uniform, current, following])
    )
    q = q.reshape(q.shape[0], 3, size, draws)
    log_density = torch.stack([uniform_log_density, current_log_prob, following_log_prob])
    scores = (q - log_density.reshape(1, 3, size, draws)) / config.temperature
    soft_max_q = config.temperature * torch.logsumexp(scores, dim=1).mean(-1)
    return config.min_q_weight * (soft_max_q - data_q)


def cql_loss(
    actor: nn.Module,
    critic: nn.Module,
    target_critic: nn.Module,
    batch: TensorDict,
    *,
    log_alpha: torch.Tensor,
    target_entropy: torch.Tensor,
    log_alpha_prime: torch.Tensor | None,
    behaviour_cloning: bool,
    config: CQLLossConfig,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Continuous CQL's total loss and its stats.

    ``actor`` is a squashed Gaussian (``actor.sample(obs) -> (action, log_prob)``, its bounds
    in ``action_scale``/``action_bias``), ``critic(obs, action) -> [num_q, B]``. The terms
    reach disjoint parameters (actor; critics; ``log_alpha``; ``log_alpha_prime``), so one
    backward pass of the sum trains them all.
    """
    keys = CQL_KEYS
    obs, action, next_obs = batch[keys.observation], batch[keys.action], batch[keys.next_observation]
    alpha = log_alpha.detach().exp()

    with torch.no_grad():
        next_action, next_log_prob = actor.sample(next_obs)
        next_value = target_critic(next_obs, next_action).amin(0)
        if not config.deterministic_backup:
            next_value = next_value - alpha * next_log_prob
        target = td_target(batch, next_value, config.gamma)
    data_q = critic(obs, action)
    critic_loss = (data_q - target).pow(2).sum(0).mean()

    penalty = conservative_penalty(actor, critic, obs, next_obs, data_q, config)
    stats: dict[str, Any] = {}
    if log_alpha_prime is None:
        conservative = penalty.sum(0).mean()
    else:
        alpha_prime = log_alpha_prime.exp().clamp(max=ALPHA_PRIME_MAX)
        gap = penalty.mean(-1) - config.lagrangian_thresh
        conservative = (alpha_prime.detach() * gap).sum()
        alpha_prime_loss = -0.5 * (alpha_prime * gap.detach()).sum()
        stats.update(alpha_prime_loss=alpha_prime_loss, alpha_prime=alpha_prime.detach())

    _, bc_log_prob = actor.sample(obs)
    new_action, log_prob = actor.sample(obs)
    if behaviour_cloning:
        actor_loss = (alpha * bc_log_prob - data_log_prob(actor, obs, action)).mean()
    else:
        with frozen(list(critic.parameters())):
            q_new = critic(obs, new_action).amin(0)
        actor_loss = (alpha * log_prob - q_new).mean()
    alpha_loss = (-log_alpha * (log_prob.detach() + target_entropy)).mean()

    total = actor_loss + critic_loss + conservative + alpha_loss
    if log_alpha_prime is not None:
        total = total + stats["alpha_prime_loss"]
    stats.update(
        actor_loss=actor_loss,
        critic_loss=critic_loss,
        cql_loss=conservative,
        alpha_loss=alpha_loss,
        alpha=alpha,
        entropy=-log_prob.detach().mean(),
        qf_mean=data_q[0].detach().mean(),
    )
    return total, stats


def discrete_cql_loss(
    q_net: nn.Module, target_q_net: nn.Module, batch: TensorDict, config: DiscreteCQLLossConfig
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Discrete CQL's total loss and its stats; ``q_net(obs) -> Q(s, .)`` of shape ``[B, A]``."""
    keys = CQL_KEYS
    q_values = q_net(batch[keys.observation])
    action = batch[keys.action].long().reshape(-1, 1)
    data_q = q_values.gather(-1, action).squeeze(-1)
    with torch.no_grad():
        next_value = target_q_net(batch[keys.next_observation]).amax(-1)
        target = td_target(batch, next_value, config.gamma)
    critic_loss = 0.5 * (data_q - target).pow(2).mean()
    conservative = (torch.logsumexp(q_values, dim=-1) - data_q).mean()
    stats = {
        "critic_loss": critic_loss,
        "cql_loss": conservative,
        "qf_mean": q_values.detach().mean(),
        "target_value_mean": target.mean(),
    }
    return critic_loss + config.min_q_weight * conservative, stats
