"""MARWIL's objective, written out on plain tensors (Wang et al. 2018, RLlib's form).

Value targets are discounted returns bootstrapped with the current critic where a segment ends
without termination (GAE with lambda = 1; see :mod:`lightning_rl.offline.returns`)::

    V_target     = return_to_go + bootstrap_discount * V(bootstrap_observation)   (no gradient)
    A            = V_target - V(s)
    c^2         <- c^2 + rate * (mean(A^2) - c^2)         (moving average, kept in checkpoints)
    w            = exp(beta * A / (1e-8 + c))              (no gradient)
    log_lik      = log pi(a | s) + bc_logstd_coeff * mean(log std)   (continuous actions)
    policy_loss  = -mean(w * log_lik)
    vf_loss      = 0.5 * mean(A^2)
    total_loss   = policy_loss + vf_coeff * vf_loss

With ``beta = 0`` the weights are 1: behaviour cloning (:mod:`lightning_rl.algorithms.bc`),
whose loss without a critic is :func:`behaviour_cloning_loss`, ``-mean(log_lik)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_rl.offline.rows import BOOTSTRAP_DISCOUNT, BOOTSTRAP_OBSERVATION, RETURN_TO_GO


@dataclass(frozen=True)
class MARWILLossKeys:
    """Where MARWIL's (and BC's) loss finds its inputs in an offline minibatch."""

    observation: str = "observation"
    action: str = "action"
    return_to_go: str = RETURN_TO_GO
    bootstrap_observation: str = BOOTSTRAP_OBSERVATION
    bootstrap_discount: str = BOOTSTRAP_DISCOUNT


MARWIL_KEYS = MARWILLossKeys()


@dataclass(frozen=True)
class MARWILLossConfig:
    """The fixed settings of MARWIL's loss."""

    beta: float
    bc_logstd_coeff: float
    vf_coeff: float
    moving_average_sqd_adv_norm_update_rate: float


def log_likelihood(
    log_prob: torch.Tensor, log_std: torch.Tensor | None, config: MARWILLossConfig
) -> torch.Tensor:
    """``log pi(a | s)`` plus ``bc_logstd_coeff`` times the mean log std (``log_std`` None:
    discrete actions)."""
    if config.bc_logstd_coeff > 0.0 and log_std is not None:
        return log_prob + config.bc_logstd_coeff * log_std.mean(-1)
    return log_prob


def value_targets(
    return_to_go: torch.Tensor, bootstrap_discount: torch.Tensor, bootstrap_value: torch.Tensor
) -> torch.Tensor:
    """``return_to_go + bootstrap_discount * V(bootstrap_observation)``."""
    return return_to_go + bootstrap_discount * bootstrap_value


def advantage_weights(
    value: torch.Tensor,
    value_target: torch.Tensor,
    moving_avg_sqd_adv_norm: torch.Tensor,
    config: MARWILLossConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(exp-weights (no grad), advantages, mean A^2)``; updates ``c^2`` in place first."""
    advantages = value_target - value
    squared_mean = advantages.pow(2).mean()
    with torch.no_grad():
        rate = config.moving_average_sqd_adv_norm_update_rate
        moving_avg_sqd_adv_norm.add_(rate * (squared_mean.detach() - moving_avg_sqd_adv_norm))
        weights = torch.exp(config.beta * advantages.detach() / (1e-8 + moving_avg_sqd_adv_norm.sqrt()))
    return weights, advantages, squared_mean


def behaviour_cloning_loss(log_lik: torch.Tensor) -> dict[str, torch.Tensor]:
    """BC without a critic: ``-mean(log_lik)``."""
    policy_loss = -log_lik.mean()
    return {
        "policy_loss": policy_loss,
        "total_loss": policy_loss,
        "action_log_prob_mean": log_lik.detach().mean(),
    }


def explained_variance(targets: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    variance = targets.var()
    return 1.0 - (targets - predictions).var() / variance.clamp_min(1e-8)


def marwil_loss(
    *,
    log_lik: torch.Tensor,
    weights: torch.Tensor,
    advantages: torch.Tensor,
    value_target: torch.Tensor,
    squared_mean: torch.Tensor,
    moving_avg_sqd_adv_norm: torch.Tensor,
    config: MARWILLossConfig,
) -> dict[str, torch.Tensor]:
    """MARWIL's loss terms from :func:`log_likelihood` and :func:`advantage_weights`' outputs."""
    policy_loss = -(weights * log_lik).mean()
    vf_loss = 0.5 * squared_mean
    total = policy_loss + config.vf_coeff * vf_loss
    return {
        "vf_loss": vf_loss,
        "moving_avg_sqd_adv_norm": moving_avg_sqd_adv_norm.clone(),
        "vf_explained_var": explained_variance(value_target, value_target - advantages.detach()),
        "advantage_weight_mean": weights.mean(),
        "policy_loss": policy_loss,
        "total_loss": total,
        "action_log_prob_mean": log_lik.detach().mean(),
    }
