"""Closed transitions -> one flat batch in torchrl's key layout (``[M]`` along the first axis).

Both the multi-agent runner (per policy) and the external-env server (per episode segment)
hold transitions as objects with ``observation``, ``action``, ``next_observation``, ``reward``
and ``extras``; this is the one place that lays them out as a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightning_rl._tree import stack_tensor_structures


def transitions_to_batch(
    transitions: Sequence[Any], terminated: torch.Tensor, truncated: torch.Tensor
) -> dict[str, Any]:
    """``terminated``/``truncated`` are ``[M, 1]`` bool columns, one row per transition."""
    batch: dict[str, Any] = {
        "observation": stack_tensor_structures([t.observation for t in transitions]),
        "action": torch.stack([t.action for t in transitions]),
        "next": {
            "observation": stack_tensor_structures([t.next_observation for t in transitions]),
            "reward": torch.tensor([[t.reward] for t in transitions], dtype=torch.float32),
            "terminated": terminated,
            "truncated": truncated,
            "done": terminated | truncated,
        },
    }
    for key in transitions[0].extras:
        batch[key] = torch.stack([t.extras[key] for t in transitions])
    return batch
