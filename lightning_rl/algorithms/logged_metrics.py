"""The metric values an algorithm logs, computed as plain dicts (the logging itself is Lightning's).

Learner stats are collected per minibatch and logged once per iteration as means: calling
``self.log`` for every stat of every minibatch costs more than a PPO update on CartPole.
Diagnostics that need more than the loss terms (PPO's clip fraction, approximate KL, explained
variance) can be handed over as :class:`DeferredStats`: their inputs are kept per minibatch and
reduced for all of the iteration's minibatches at once, a few tensor ops per iteration instead
of a dozen per update. Evaluation episodes are summarised into RLlib's ``evaluation/...`` names.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, MutableMapping
from typing import Any

import torch


class DeferredStats(MutableMapping):
    """One minibatch's stats, some of them computed later (see the module docstring).

    ``eager`` holds the values known at once (the loss terms, and whatever a caller adds with
    ``stats[name] = value``); the names in :attr:`deferred_names` are computed from inputs a
    subclass keeps: on first read of one of them for this minibatch alone, or by
    :meth:`reduce_deferred` for every minibatch of an iteration together when
    :class:`LearnerMetrics` averages them. Either way the value is the same per-minibatch
    statistic, so the logged iteration mean does not depend on which path computed it.
    """

    deferred_names: tuple[str, ...] = ()

    def __init__(self, eager: dict[str, Any]) -> None:
        self.eager = dict(eager)
        self._computed: dict[str, torch.Tensor] | None = None

    # -- what a subclass provides ------------------------------------------------------------
    def group_key(self) -> Hashable:
        """Minibatches with equal keys have inputs that stack (same shapes and settings)."""
        return type(self)

    @classmethod
    def reduce_deferred(cls, items: list[DeferredStats]) -> dict[str, torch.Tensor]:
        """``{name: per-minibatch values, shape [len(items)]}`` of the deferred stats of
        ``items`` (one group); overridden to compute them in a few batched ops."""
        raise NotImplementedError

    # -- the mapping -------------------------------------------------------------------------
    def deferred(self) -> dict[str, torch.Tensor]:
        """This minibatch's deferred stats alone (computed once, on first read)."""
        if self._computed is None:
            self._computed = {k: v[0] for k, v in type(self).reduce_deferred([self]).items()}
        return self._computed

    def __getitem__(self, name: str) -> Any:
        if name in self.eager:
            return self.eager[name]
        if name in self.deferred_names:
            return self.deferred()[name]
        raise KeyError(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.eager[name] = value

    def __delitem__(self, name: str) -> None:
        del self.eager[name]

    def __iter__(self) -> Iterator[str]:
        yield from self.eager
        yield from (name for name in self.deferred_names if name not in self.eager)

    def __len__(self) -> int:
        return len(self.eager) + sum(name not in self.eager for name in self.deferred_names)


class LearnerMetrics:
    """Per-policy learner stats of the current iteration, until :meth:`pop_means`.

    Each :meth:`add` keeps one stacked tensor of the minibatch's stats (one op, no host read),
    not one small tensor per stat: on CartPole-sized updates the per-stat ``detach/float/mean``
    calls cost more than a tenth of the update.
    """

    def __init__(self) -> None:
        # {policy_id: {stat names: [one row of values per minibatch]}}
        self._buckets: dict[str, dict[tuple[str, ...], list[torch.Tensor]]] = {}
        # {policy_id: {DeferredStats.group_key(): [the minibatches' DeferredStats]}}
        self._deferred: dict[str, dict[Hashable, list[DeferredStats]]] = {}

    def add(self, metrics: dict[str, Any], policy_id: str) -> None:
        if isinstance(metrics, DeferredStats):
            if any(name in metrics.eager for name in metrics.deferred_names):
                metrics = dict(metrics)  # a caller replaced a deferred stat: take the values as given
            else:
                if metrics.deferred_names:
                    group = self._deferred.setdefault(policy_id, {})
                    group.setdefault(metrics.group_key(), []).append(metrics)
                metrics = metrics.eager
        if not metrics:
            return
        device = next((v.device for v in metrics.values() if isinstance(v, torch.Tensor)), None)
        row = torch.stack([_scalar(value, device) for value in metrics.values()])
        bucket = self._buckets.setdefault(policy_id, {})
        bucket.setdefault(tuple(metrics), []).append(row)

    def pop_means(self) -> dict[str, torch.Tensor]:
        """``{"learners/<policy>/<name>": mean}`` of everything added since the last call."""
        means: dict[str, torch.Tensor] = {}
        for policy_id in [*self._buckets, *(p for p in self._deferred if p not in self._buckets)]:
            # Per stat name: (sum over minibatches, number of minibatches).
            parts: dict[str, list[tuple[torch.Tensor, int]]] = {}
            for names, rows in self._buckets.get(policy_id, {}).items():
                totals = torch.stack(rows).sum(0).unbind()
                for name, total in zip(names, totals, strict=True):
                    parts.setdefault(name, []).append((total, len(rows)))
            for items in self._deferred.get(policy_id, {}).values():
                for name, values in type(items[0]).reduce_deferred(items).items():
                    parts.setdefault(name, []).append((values.float().sum(), len(items)))
            for name, sums in parts.items():
                total = sums[0][0] if len(sums) == 1 else torch.stack([s for s, _ in sums]).sum()
                means[f"learners/{policy_id}/{name}"] = total / sum(n for _, n in sums)
        self._buckets = {}
        self._deferred = {}
        return means


def _scalar(value: Any, device: torch.device | None) -> torch.Tensor:
    """One stat as a float32 scalar tensor (tensors are averaged, numbers converted)."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dim() != 0:
            value = value.float().mean()
        return value if value.dtype == torch.float32 else value.float()
    return torch.tensor(float(value), device=device)


def evaluation_metrics(batch: dict[str, Any]) -> dict[str, torch.Tensor | float]:
    """``evaluation/...`` summaries of one evaluation's episodes (empty when none finished)."""
    returns = batch["episode_return"]
    n = int(returns.numel())
    if n == 0:
        return {}
    metrics: dict[str, torch.Tensor | float] = {
        "evaluation/episode_return_mean": returns.mean(),
        "evaluation/episode_return_std": returns.std() if n > 1 else returns.new_zeros(()),
        "evaluation/episode_return_min": returns.min(),
        "evaluation/episode_return_max": returns.max(),
        "evaluation/episode_len_mean": batch["episode_len"].mean(),
        "evaluation/num_episodes": float(n),
        "evaluation/num_env_steps": float(batch["num_env_steps"]),
    }
    for policy_id, policy_returns in batch.get("policy_returns", {}).items():
        if policy_returns.numel():
            metrics[f"evaluation/module_episode_returns_mean/{policy_id}"] = policy_returns.mean()
    return metrics
