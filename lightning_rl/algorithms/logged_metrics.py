"""The metric values an algorithm logs, computed as plain dicts (the logging itself is Lightning's).

Learner stats are collected per minibatch and logged once per iteration as means: calling
``self.log`` for every stat of every minibatch costs more than a PPO update on CartPole.
Evaluation episodes are summarised into RLlib's ``evaluation/...`` names.
"""

from __future__ import annotations

from typing import Any

import torch


class LearnerMetrics:
    """Per-policy learner stats of the current iteration, until :meth:`pop_means`.

    Each :meth:`add` keeps one stacked tensor of the minibatch's stats (one op, no host read),
    not one small tensor per stat: on CartPole-sized updates the per-stat ``detach/float/mean``
    calls cost more than a tenth of the update.
    """

    def __init__(self) -> None:
        # {policy_id: {stat names: [one row of values per minibatch]}}
        self._buckets: dict[str, dict[tuple[str, ...], list[torch.Tensor]]] = {}

    def add(self, metrics: dict[str, Any], policy_id: str) -> None:
        if not metrics:
            return
        device = next((v.device for v in metrics.values() if isinstance(v, torch.Tensor)), None)
        row = torch.stack([_scalar(value, device) for value in metrics.values()])
        bucket = self._buckets.setdefault(policy_id, {})
        bucket.setdefault(tuple(metrics), []).append(row)

    def pop_means(self) -> dict[str, torch.Tensor]:
        """``{"learners/<policy>/<name>": mean}`` of everything added since the last call."""
        means: dict[str, torch.Tensor] = {}
        for policy_id, bucket in self._buckets.items():
            sums: dict[str, torch.Tensor] = {}
            counts: dict[str, int] = {}
            if len(bucket) == 1:  # the usual case: the same stats every minibatch
                ((names, rows),) = bucket.items()
                for name, value in zip(names, torch.stack(rows).mean(0).unbind(), strict=True):
                    means[f"learners/{policy_id}/{name}"] = value
                continue
            for names, rows in bucket.items():
                totals = torch.stack(rows).sum(0).unbind()
                for name, total in zip(names, totals, strict=True):
                    sums[name] = sums[name] + total if name in sums else total
                    counts[name] = counts.get(name, 0) + len(rows)
            for name, total in sums.items():
                means[f"learners/{policy_id}/{name}"] = total / counts[name]
        self._buckets = {}
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
