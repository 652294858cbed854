"""The metric values an algorithm logs, computed as plain dicts (the logging itself is Lightning's).

Learner stats are collected per minibatch and logged once per iteration as means: calling
``self.log`` for every stat of every minibatch costs more than a PPO update on CartPole.
Evaluation episodes are summarised into RLlib's ``evaluation/...`` names.
"""

from __future__ import annotations

from typing import Any

import torch


class LearnerMetrics:
    """Per-policy learner stats of the current iteration, until :meth:`pop_means`."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[str, list[torch.Tensor]]] = {}

    def add(self, metrics: dict[str, Any], policy_id: str) -> None:
        bucket = self._buckets.setdefault(policy_id, {})
        for name, value in metrics.items():
            value = (
                value.detach().float().mean()
                if isinstance(value, torch.Tensor)
                else torch.tensor(float(value))
            )
            bucket.setdefault(name, []).append(value)

    def pop_means(self) -> dict[str, torch.Tensor]:
        """``{"learners/<policy>/<name>": mean}`` of everything added since the last call."""
        means = {
            f"learners/{policy_id}/{name}": torch.stack(values).mean()
            for policy_id, bucket in self._buckets.items()
            for name, values in bucket.items()
        }
        self._buckets = {}
        return means


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
