"""IMPALA's objective, written out on plain tensors (Espeholt et al. 2018).

For a minibatch of ``[rows, T]`` sequences sampled by a behaviour policy ``mu`` (its
log-probabilities stored by the runners) and learned by the current policy ``pi``, V-trace
(:func:`vtrace_targets`, on torchrl's estimator) gives value targets ``v_s`` and
policy-gradient advantages ``A_s`` with clipped importance ratios; then::

    policy_loss = -mean(log pi(a_s | x_s) * A_s)
    vf_loss     = 0.5 * mean((V(x_s) - v_s)^2)
    entropy     = mean(H(pi(. | x_s)))
    total_loss  = policy_loss + vf_loss_coeff * vf_loss - entropy_coeff * entropy

APPO (:mod:`lightning_rl.algorithms.appo.loss`) keeps the targets and the value and entropy
terms and replaces the policy term with PPO's clipped surrogate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_rl.algorithms.impala.vtrace import vtrace


@dataclass(frozen=True)
class ImpalaLossKeys:
    """Where IMPALA's (and APPO's) loss finds its inputs in a minibatch of sequences."""

    observation: str = "observation"
    action: str = "action"
    behaviour_log_prob: str = "action_log_prob"  # log mu(a|x), stored by the runner
    reward: tuple[str, str] = ("next", "reward")
    done: tuple[str, str] = ("next", "done")
    terminated: tuple[str, str] = ("next", "terminated")
    next_observation: tuple[str, str] = ("next", "observation")


IMPALA_KEYS = ImpalaLossKeys()


@dataclass(frozen=True)
class ImpalaLossConfig:
    """The fixed settings of IMPALA's loss (the scheduled ``entropy_coeff`` is passed per call)."""

    gamma: float
    vtrace_clip_rho_threshold: float
    vtrace_clip_pg_rho_threshold: float
    vf_loss_coeff: float


def vtrace_targets(
    *,
    behaviour_log_prob: torch.Tensor,
    target_log_prob: torch.Tensor,
    value: torch.Tensor,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    config: ImpalaLossConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v_s, A_s)`` of ``[rows, T, 1]`` sequences; no gradient flows through either."""
    return vtrace(
        behaviour_log_prob=behaviour_log_prob.to(value.dtype),
        target_log_prob=target_log_prob.detach(),
        value=value.detach(),
        next_value=next_value,
        reward=reward.to(value.dtype),
        done=done,
        terminated=terminated,
        gamma=config.gamma,
        clip_rho_threshold=config.vtrace_clip_rho_threshold,
        clip_pg_rho_threshold=config.vtrace_clip_pg_rho_threshold,
    )


def value_loss(value: torch.Tensor, vs: torch.Tensor) -> torch.Tensor:
    """``0.5 * mean((V(x_s) - v_s)^2)``."""
    return 0.5 * (value - vs).pow(2).mean()


def diagnostics(
    log_prob: torch.Tensor, behaviour_log_prob: torch.Tensor, value: torch.Tensor, vs: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Mean importance ratio ``pi / mu`` and the critic's explained variance of ``v_s``."""
    with torch.no_grad():
        rho = (log_prob.detach() - behaviour_log_prob).exp()
        explained = 1.0 - (vs - value.detach()).var() / vs.var().clamp_min(1e-8)
    return {"mean_rho": rho.mean(), "vf_explained_var": explained}


def impala_loss(
    *,
    log_prob: torch.Tensor,
    behaviour_log_prob: torch.Tensor,
    value: torch.Tensor,
    vs: torch.Tensor,
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    config: ImpalaLossConfig,
    entropy_coeff: torch.Tensor | float,
) -> dict[str, torch.Tensor]:
    """IMPALA's loss terms; every input is ``[rows, T, 1]`` except ``entropy`` (``[rows, T]``).

    ``log_prob``, ``value`` and ``entropy`` carry gradients; ``vs`` and ``advantages`` come from
    :func:`vtrace_targets`.
    """
    policy_loss = -(log_prob * advantages).mean()
    vf_loss = value_loss(value, vs)
    mean_entropy = entropy.mean()
    total = policy_loss + config.vf_loss_coeff * vf_loss - entropy_coeff * mean_entropy
    return {
        "policy_loss": policy_loss,
        "vf_loss": vf_loss,
        "entropy": mean_entropy,
        "total_loss": total,
        **diagnostics(log_prob, behaviour_log_prob, value, vs),
    }
