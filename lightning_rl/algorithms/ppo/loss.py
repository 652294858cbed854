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

The diagnostics RLlib logs beside the loss (approximate KL, clip fractions, the critic's
explained variance) are no part of the gradient: :meth:`PPOLossTerms.deferred_stats` keeps their
inputs and :class:`PPOStats` computes them for all of an iteration's minibatches at once, which
took ~15 small tensor ops off every update (``benchmarks/learner_overhead.py``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch

from lightning_rl.algorithms.kl_penalty import k3_kl
from lightning_rl.algorithms.logged_metrics import DeferredStats


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
class PPODiagnostics:
    """What PPO's diagnostics are computed from, for one minibatch (detached, no gradient).

    The approximate KL, the clip fractions and the critic's explained variance are not part of
    the loss: :class:`PPOStats` keeps these inputs per minibatch and computes the diagnostics
    of all of an iteration's minibatches in one go (:func:`diagnostics_per_minibatch`).
    """

    log_ratio: torch.Tensor  # log pi - log pi_old per step
    value: torch.Tensor  # V(s) with the weights of this update
    value_target: torch.Tensor
    old_value: torch.Tensor | None  # V_old(s), kept only with value clipping
    mask: torch.Tensor | None
    clip_param: float
    vf_clip_param: float | None

    def stat_names(self) -> tuple[str, ...]:
        names = ("mean_kl_loss", "clip_fraction", "vf_explained_var")
        return names if self.vf_clip_param is None else (*names, "value_clip_fraction")


def diagnostics_per_minibatch(items: list[PPODiagnostics]) -> dict[str, torch.Tensor]:
    """``{stat: [len(items)] values}``: each minibatch's approximate KL ``mean(log pi_old - log
    pi)``, clip fraction, explained variance ``1 - Var(target - V) / Var(target)`` (population
    variances) and, with value clipping, value clip fraction; means over real steps with a mask.
    ``items`` share shapes and settings (:meth:`PPOStats.group_key`)."""
    first = items[0]
    count = len(items)
    with torch.no_grad():
        log_ratio = torch.stack([d.log_ratio for d in items]).reshape(count, -1)
        value = torch.stack([d.value for d in items]).reshape(count, -1)
        target = torch.stack([d.value_target for d in items]).reshape(count, -1)
        mask = None if first.mask is None else torch.stack([d.mask for d in items]).reshape(count, -1)
        real = None if mask is None else mask.sum(1).clamp_min(1)

        def mean(values: torch.Tensor) -> torch.Tensor:
            return values.mean(1) if mask is None else (values * mask).sum(1) / real

        def variance(values: torch.Tensor) -> torch.Tensor:
            if mask is None:
                return values.var(1, correction=0)
            return mean((values - mean(values).unsqueeze(1)).pow(2))

        low, high = log_clip_bounds(first.clip_param)
        eps = torch.finfo(target.dtype).eps
        stats = {
            "mean_kl_loss": mean(-log_ratio),
            "clip_fraction": mean((log_ratio.clamp(low, high) != log_ratio).to(log_ratio.dtype)),
            "vf_explained_var": 1.0 - variance(target - value) / (variance(target) + eps),
        }
        if first.vf_clip_param is not None:
            change = value - torch.stack([d.old_value for d in items]).reshape(count, -1)
            clipped = change.clamp(-first.vf_clip_param, first.vf_clip_param) != change
            stats["value_clip_fraction"] = mean(clipped.to(change.dtype))
    return stats


@dataclass(frozen=True)
class PPOLossTerms:
    """One minibatch's loss terms (``vf_loss`` already weighted by ``vf_loss_coeff``) and the
    inputs of its diagnostics (``kl_approx``, ``clip_fraction``, ``vf_explained_var``,
    ``value_clip_fraction``: computed when read)."""

    total_loss: torch.Tensor
    policy_loss: torch.Tensor
    vf_loss: torch.Tensor
    diagnostics: PPODiagnostics
    entropy_loss: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    kl_coeff: torch.Tensor | None = None

    @property
    def kl_approx(self) -> torch.Tensor:
        """Mean ``log(pi_old / pi)``: a diagnostic, no gradient."""
        return self._diagnostic("mean_kl_loss")

    @property
    def clip_fraction(self) -> torch.Tensor:
        return self._diagnostic("clip_fraction")

    @property
    def vf_explained_var(self) -> torch.Tensor:
        return self._diagnostic("vf_explained_var")

    @property
    def value_clip_fraction(self) -> torch.Tensor | None:
        return None if self.diagnostics.vf_clip_param is None else self._diagnostic("value_clip_fraction")

    def _diagnostic(self, name: str) -> torch.Tensor:
        return diagnostics_per_minibatch([self.diagnostics])[name][0]

    def loss_stats(self) -> dict[str, torch.Tensor]:
        """The loss terms under the names PPO logs (RLlib's), without the diagnostics."""
        stats = {"policy_loss": self.policy_loss, "vf_loss": self.vf_loss}
        optional = {"entropy": self.entropy, "kl": self.kl, "kl_coeff": self.kl_coeff}
        stats.update({name: value for name, value in optional.items() if value is not None})
        stats["total_loss"] = self.total_loss
        return stats

    def stats(self) -> dict[str, torch.Tensor]:
        """Every stat, computed now, under the names PPO logs: ``learners/<policy>/<name>``."""
        diagnostics = {k: v[0] for k, v in diagnostics_per_minibatch([self.diagnostics]).items()}
        return {**diagnostics, **self.loss_stats()}

    def deferred_stats(self) -> PPOStats:
        """The same stats, the diagnostics computed later for all minibatches at once (the
        learner's hot path: :class:`~lightning_rl.algorithms.logged_metrics.LearnerMetrics`)."""
        return PPOStats(self.loss_stats(), self.diagnostics)


class PPOStats(DeferredStats):
    """PPO's per-minibatch stats: loss terms now, diagnostics (:class:`PPODiagnostics`) later."""

    def __init__(self, eager: dict[str, Any], diagnostics: PPODiagnostics) -> None:
        super().__init__(eager)
        self.diagnostics = diagnostics
        self.deferred_names = diagnostics.stat_names()

    def group_key(self) -> Hashable:
        d = self.diagnostics
        return (
            PPOStats,
            tuple(d.log_ratio.shape),
            tuple(d.value.shape),
            d.mask is None,
            d.clip_param,
            d.vf_clip_param,
            d.log_ratio.device,
        )

    @classmethod
    def reduce_deferred(cls, items: list[DeferredStats]) -> dict[str, torch.Tensor]:
        return diagnostics_per_minibatch([item.diagnostics for item in items])


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


def log_clip_bounds(clip_param: float) -> tuple[float, float]:
    """``log(1 - eps), log(1 + eps)``; from ``eps >= 1`` on the ratio has no lower bound (as in
    RLlib's ratio-space clamp to ``1 - eps <= 0``), where ``log1p(-eps)`` is -inf or undefined."""
    low = math.log1p(-clip_param) if clip_param < 1.0 else -math.inf
    return low, math.log1p(clip_param)


def clipped_surrogate(log_ratio: torch.Tensor, advantage: torch.Tensor, clip_param: float) -> torch.Tensor:
    """Per-step ``-min(r A, clip(r, 1 - eps, 1 + eps) A)`` (shape of ``advantage``) from
    ``log r = log pi - log pi_old``. The ratio is clipped in log space, as torchrl does."""
    log_ratio = log_ratio.unsqueeze(-1)
    clipped_log_ratio = log_ratio.clamp(*log_clip_bounds(clip_param))
    unclipped_gain = log_ratio.exp() * advantage
    clipped_gain = clipped_log_ratio.exp() * advantage
    return -torch.minimum(unclipped_gain, clipped_gain)


def value_error(
    value: torch.Tensor, value_target: torch.Tensor, old_value: torch.Tensor, vf_clip_param: float | None
) -> torch.Tensor:
    """Per-step squared error of the critic.

    PPO2's value clipping keeps the new prediction within ``vf_clip_param`` of the one GAE used
    and takes the larger (more pessimistic) of the clipped and unclipped errors.
    """
    error = (value - value_target).pow(2)
    if vf_clip_param is None:
        return error
    change = value - old_value
    clipped_change = change.clamp(-vf_clip_param, vf_clip_param)
    clipped_error = (old_value + clipped_change - value_target).pow(2)
    return torch.maximum(error, clipped_error)


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

    log_ratio = log_prob - old_log_prob
    policy_loss = masked_mean(clipped_surrogate(log_ratio, advantage, config.clip_param), mask)
    squared_error = value_error(value, value_target, old_value, config.vf_clip_param)
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
        kl = masked_mean(k3_kl(log_ratio), mask)
        total = total + kl_coeff * kl

    diagnostics = PPODiagnostics(
        log_ratio=log_ratio.detach(),
        value=value.detach(),
        value_target=value_target,
        old_value=None if config.vf_clip_param is None else old_value,
        mask=mask,
        clip_param=config.clip_param,
        vf_clip_param=config.vf_clip_param,
    )
    return PPOLossTerms(
        total_loss=total,
        policy_loss=policy_loss,
        vf_loss=vf_loss,
        diagnostics=diagnostics,
        entropy_loss=entropy_loss,
        entropy=mean_entropy,
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
