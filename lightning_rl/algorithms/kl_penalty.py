"""The adaptive KL penalty of PPO (feed-forward and recurrent) and APPO."""

from __future__ import annotations

import torch


def k3_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """Per-step KL(old || new) from ``log(new/old)``: the low-variance, never-negative 'k3' estimator.

    ``expm1`` keeps it exact for the tiny ratios of a gentle update: ``exp(r) - 1 - r`` in float32
    cancels to noise around zero once ``|r|`` drops below ~1e-3, which made the adaptive
    coefficient shrink on updates that did move the policy.
    """
    return torch.expm1(log_ratio) - log_ratio


def adapt_kl_coeff(kl_coeff: torch.Tensor, mean_kl: float, kl_target: float) -> None:
    """RLlib's rule, in place: raise the penalty when KL overshoots the target, lower it when far below."""
    if mean_kl > 2.0 * kl_target:
        kl_coeff.mul_(1.5)
    elif mean_kl < 0.5 * kl_target:
        kl_coeff.mul_(0.5)
