"""PPO's objective, written out on plain tensors (Schulman et al. 2017, with RLlib's options).

For one minibatch, with ``r_t = pi(a_t | s_t) / pi_old(a_t | s_t)`` computed from the
log-probabilities the runners stored and ``A_t`` the GAE advantage (standardised per minibatch
when ``normalize_advantages``)::

    policy_loss  = -mean(min(r_t * A_t, clip(r_t, 1 - clip_param, 1 + clip_param) * A_t))
    vf_loss      = vf_loss_coeff * mean((V(s_t) - V_target_t)^2)
                   # with vf_clip_param: the larger of that error and the error of
                   # V_old(s_t) + clip(V(s_t) - V_old(s_t), -vf_clip_param, vf_clip_param)
    entropy_loss = -entropy_coeff * mean(H(pi(. | s_t)))            (when use_entropy)
    kl_loss      = kl_coeff * mean(exp(log r_t) - 1 - log r_t)      (when use_kl_loss; 'k3')
    total_loss   = policy_loss + vf_loss + entropy_loss + kl_loss

This is what torchrl's ``ClipPPOLoss`` computes (``tests/test_loss_ppo.py`` checks it against
torchrl on the same networks and batch); torchrl's ``GAE`` still computes the advantages and
value targets. Memory models pass ``mask`` (1 on real steps, 0 on padding): every mean,
including the advantage standardisation, then runs over real steps only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from lightning_rl.algorithms.kl_penalty import k3_kl


@dataclass(frozen=True)
class PPOLossKeys:
    """Where PPO's loss finds its inputs in a minibatch (torchrl's names)."""

    observation: str = "observation"
    action: str = "action"
    old_log_prob: str = "action_log_prob"  # the runner's log pi_old(a|s)
    advantage: str = "advantage"  # written by GAE
    value_target: str = "value_target"  # written by GAE
    old_value: str = "state_value"  # V_old(s), written by GAE; used by value clipping


PPO_KEYS = PPOLossKeys()


@dataclass(frozen=True)
class PPOLossConfig:
    """The fixed settings of PPO's loss (the scheduled ``entropy_coeff`` and the adaptive
    ``kl_coeff`` are passed per call)."""

    clip_param: float
    vf_clip_param: float | None
    vf_loss_coeff: float
    use_entropy: bool
    normalize_advantages: bool
    use_kl_loss: bool


@dataclass(frozen=True)
class PPOLossTerms:
    """One minibatch's loss terms (``vf_loss`` already weighted by ``vf_loss_coeff``)."""

    total_loss: torch.Tensor
    policy_loss: torch.Tensor
    vf_loss: torch.Tensor
    kl_approx: torch.Tensor  # mean log(pi_old / pi): a diagnostic, no gradient
    clip_fraction: torch.Tensor
    vf_explained_var: torch.Tensor
    entropy_loss: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    value_clip_fraction: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    kl_coeff: torch.Tensor | None = None

    def stats(self) -> dict[str, torch.Tensor]:
        """The terms under the names PPO logs (RLlib's): ``learners/<policy>/<name>``."""
        stats = {
            "policy_loss": self.policy_loss,
            "vf_loss": self.vf_loss,
            "mean_kl_loss": self.kl_approx,
            "clip_fraction": self.clip_fraction,
            "vf_explained_var": self.vf_explained_var,
        }
        optional = {
            "entropy": self.entropy,
            "value_clip_fraction": self.value_clip_fraction,
            "kl": self.kl,
            "kl_coeff": self.kl_coeff,
        }
        stats.update({name: value for name, value in optional.items() if value is not None})
        stats["total_loss"] = self.total_loss
        return stats


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over all elements, or over those where ``mask`` is 1 (``values`` takes its shape)."""
    if mask is None:
        return values.mean()
    values = values.reshape(mask.shape)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def standardize(advantage: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(A - mean) / std`` over the minibatch (over real steps with ``mask``)."""
    if mask is None:
        # torchrl's formula: unbiased std, floored at float32's resolution.
        return (advantage - advantage.mean()) / advantage.std().clamp_min(1e-6)
    flat = advantage.reshape(mask.shape)
    mean = masked_mean(flat, mask)
    std = masked_mean((flat - mean) ** 2, mask).sqrt()
    return (advantage - mean) / (std + 1e-8)


def clipped_surrogate(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor, clip_param: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step ``-min(r A, clip(r, 1 - eps, 1 + eps) A)`` (shape of ``advantage``) and whether
    each step's ratio was clipped. The ratio is clipped in log space, as torchrl does."""
    log_ratio = (log_prob - old_log_prob).unsqueeze(-1)
    clipped_log_ratio = log_ratio.clamp(math.log1p(-clip_param), math.log1p(clip_param))
    unclipped_gain = log_ratio.exp() * advantage
    clipped_gain = clipped_log_ratio.exp() * advantage
    was_clipped = (clipped_log_ratio != log_ratio).to(log_ratio.dtype)
    return -torch.minimum(unclipped_gain, clipped_gain), was_clipped


def value_error(
    value: torch.Tensor, value_target: torch.Tensor, old_value: torch.Tensor, vf_clip_param: float | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-step squared error of the critic and, with ``vf_clip_param``, which steps were clipped.

    PPO2's value clipping keeps the new prediction within ``vf_clip_param`` of the one GAE used
    and takes the larger (more pessimistic) of the clipped and unclipped errors.
    """
    error = (value - value_target).pow(2)
    if vf_clip_param is None:
        return error, None
    change = value - old_value
    clipped_change = change.clamp(-vf_clip_param, vf_clip_param)
    clipped_error = (old_value + clipped_change - value_target).pow(2)
    was_clipped = (change != clipped_change).to(value.dtype)
    return torch.maximum(error, clipped_error), was_clipped


def explained_variance(
    target: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``1 - Var(target - prediction) / Var(target)`` (population variances; no gradient)."""
    with torch.no_grad():
        target, residual = target.detach(), (target - prediction).detach()
        if mask is not None:
            target, residual = target.reshape(mask.shape)[mask > 0], residual.reshape(mask.shape)[mask > 0]
        eps = torch.finfo(target.dtype).eps
        return 1.0 - residual.var(correction=0) / (target.var(correction=0) + eps)


def ppo_loss(
    *,
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantage: torch.Tensor,
    value: torch.Tensor,
    value_target: torch.Tensor,
    old_value: torch.Tensor,
    entropy: torch.Tensor | None,
    config: PPOLossConfig,
    entropy_coeff: torch.Tensor | float = 0.0,
    kl_coeff: torch.Tensor | float = 0.0,
    mask: torch.Tensor | None = None,
) -> PPOLossTerms:
    """PPO's loss terms for one minibatch.

    ``log_prob`` (with gradient), ``old_log_prob`` and ``entropy`` are per step (``[B]``, or
    ``[B, L]`` for sequences); ``advantage``, ``value`` (with gradient), ``value_target`` and
    ``old_value`` carry a trailing 1 (``[B, 1]``). ``entropy`` may be None when
    ``config.use_entropy`` is off. ``mask`` (``[B, L]``) restricts every mean to real steps.
    """
    if config.normalize_advantages and advantage.numel() > 1:
        advantage = standardize(advantage, mask)

    surrogate, was_clipped = clipped_surrogate(log_prob, old_log_prob, advantage, config.clip_param)
    policy_loss = masked_mean(surrogate, mask)

    squared_error, value_was_clipped = value_error(value, value_target, old_value, config.vf_clip_param)
    vf_loss = masked_mean(config.vf_loss_coeff * squared_error, mask)
    total = policy_loss + vf_loss

    entropy_loss = mean_entropy = None
    if config.use_entropy:
        if entropy is None:
            raise ValueError("ppo_loss: config.use_entropy is on, but no entropy was given.")
        entropy_loss = masked_mean(-entropy_coeff * entropy, mask)
        mean_entropy = masked_mean(entropy.detach(), mask)
        total = total + entropy_loss

    kl = None
    if config.use_kl_loss:
        kl = masked_mean(k3_kl(log_prob - old_log_prob), mask)
        total = total + kl_coeff * kl

    with torch.no_grad():
        kl_approx = masked_mean(old_log_prob - log_prob.detach(), mask)
        clip_fraction = masked_mean(was_clipped, mask)
        value_clip_fraction = None if value_was_clipped is None else masked_mean(value_was_clipped, mask)
    return PPOLossTerms(
        total_loss=total,
        policy_loss=policy_loss,
        vf_loss=vf_loss,
        kl_approx=kl_approx,
        clip_fraction=clip_fraction,
        vf_explained_var=explained_variance(value_target, value, mask),
        entropy_loss=entropy_loss,
        entropy=mean_entropy,
        value_clip_fraction=value_clip_fraction,
        kl=kl,
        kl_coeff=torch.as_tensor(kl_coeff) if config.use_kl_loss else None,
    )


def ppo_loss_for_batch(
    batch: Any,
    dist: torch.distributions.Distribution,
    value: torch.Tensor,
    config: PPOLossConfig,
    *,
    entropy_coeff: torch.Tensor | float = 0.0,
    kl_coeff: torch.Tensor | float = 0.0,
    mask: torch.Tensor | None = None,
    keys: PPOLossKeys = PPO_KEYS,
) -> PPOLossTerms:
    """:func:`ppo_loss` with its per-step inputs read from a minibatch under ``keys``: the caller
    gives only what its networks compute, the action distribution and the values (the
    feed-forward, recurrent and RLModule policies differ there and nowhere else)."""
    return ppo_loss(
        log_prob=dist.log_prob(batch[keys.action]),
        old_log_prob=batch[keys.old_log_prob],
        advantage=batch[keys.advantage],
        value=value,
        value_target=batch[keys.value_target],
        old_value=batch[keys.old_value],
        entropy=dist.entropy() if config.use_entropy else None,
        config=config,
        entropy_coeff=entropy_coeff,
        kl_coeff=kl_coeff,
        mask=mask,
    )
