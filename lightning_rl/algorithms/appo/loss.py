"""APPO's objective, written out on plain tensors: PPO's clipped surrogate on V-trace advantages.

A slowly moving target policy ``pi_target`` plays the part of PPO's old policy. V-trace
(:func:`lightning_rl.algorithms.impala.loss.vtrace_targets`) corrects the runners' samples
(behaviour policy ``mu``) towards ``pi_target`` and gives ``v_s`` and ``A_s``; then, with the
ratio of the learning policy to the target policy computed through the stored ``mu``::

    r_s         = clip(mu / pi_target, 0, 2) * pi / mu
    policy_loss = -mean(min(A_s * r_s, A_s * clip(r_s, 1 - clip_param, 1 + clip_param)))
    vf_loss     = 0.5 * mean((V(x_s) - v_s)^2)
    entropy     = mean(H(pi(. | x_s)))
    kl          = mean(KL(pi_target || pi))
    total_loss  = policy_loss + vf_loss_coeff * vf_loss - entropy_coeff * entropy
                  (+ kl_coeff * kl when use_kl_loss)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_rl.algorithms.impala.loss import IMPALA_KEYS, ImpalaLossConfig, diagnostics, value_loss

# APPO reads its minibatch under IMPALA's keys.
APPO_KEYS = IMPALA_KEYS

# The cap of the behaviour-to-target importance weight inside the ratio (RLlib's).
MAX_TARGET_IMPORTANCE_WEIGHT = 2.0


@dataclass(frozen=True)
class APPOLossConfig(ImpalaLossConfig):
    """IMPALA's settings plus the surrogate's clip range and the KL switch."""

    clip_param: float
    use_kl_loss: bool


def clipped_surrogate(
    log_prob: torch.Tensor,
    target_log_prob: torch.Tensor,
    behaviour_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_param: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(policy_loss, clip_fraction)`` of APPO's surrogate; all inputs ``[rows, T, 1]``."""
    is_ratio = (behaviour_log_prob - target_log_prob).exp().clamp(0.0, MAX_TARGET_IMPORTANCE_WEIGHT)
    ratio = is_ratio * (log_prob - behaviour_log_prob).exp()
    surrogate = torch.minimum(
        advantages * ratio, advantages * ratio.clamp(1.0 - clip_param, 1.0 + clip_param)
    )
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip_param).float().mean()
    return -surrogate.mean(), clip_fraction


def appo_loss(
    *,
    log_prob: torch.Tensor,
    target_log_prob: torch.Tensor,
    behaviour_log_prob: torch.Tensor,
    value: torch.Tensor,
    vs: torch.Tensor,
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    kl: torch.Tensor,
    config: APPOLossConfig,
    entropy_coeff: torch.Tensor | float,
    kl_coeff: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """APPO's loss terms. ``log_prob``, ``target_log_prob``, ``behaviour_log_prob``, ``value``,
    ``vs`` and ``advantages`` are ``[rows, T, 1]``; ``entropy`` and ``kl`` (``KL(pi_target ||
    pi)``) are per step, ``[rows, T]``. ``vs`` and ``advantages`` come from V-trace towards the
    target policy."""
    policy_loss, clip_fraction = clipped_surrogate(
        log_prob, target_log_prob, behaviour_log_prob, advantages, config.clip_param
    )
    vf_loss = value_loss(value, vs)
    mean_entropy = entropy.mean()
    total = policy_loss + config.vf_loss_coeff * vf_loss - entropy_coeff * mean_entropy
    mean_kl = kl.mean()
    if config.use_kl_loss:
        total = total + kl_coeff * mean_kl
    return {
        "policy_loss": policy_loss,
        "vf_loss": vf_loss,
        "entropy": mean_entropy,
        "mean_kl_loss": mean_kl,
        "kl_coeff": kl_coeff,
        "clip_fraction": clip_fraction,
        "total_loss": total,
        **diagnostics(log_prob, behaviour_log_prob, value, vs),
    }
