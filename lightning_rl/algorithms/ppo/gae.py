"""Generalized advantage estimation over a ``[num_envs, T, 1]`` batch, as a reverse scan.

The same values as torchrl's ``vec_generalized_advantage_estimate`` (checked in
``tests/test_ppo_gae.py`` to float32 precision), written out here because importing any part of
``torchrl.objectives`` loads ``torchrl.data`` with it: on this project's reference machine that
is about 1 s of every PPO start-up and 70 MB of the driver's memory, for one function
(``benchmarks/learner_overhead.py`` reports the per-call time beside torchrl's).

``done`` ends the recursion (an episode boundary, terminated or truncated); ``terminated``
alone drops the bootstrap value: a truncated step still bootstraps from ``next_value``, the
critic's value of the true final observation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from lightning_rl.algorithms.ppo.loss import PPO_KEYS

if TYPE_CHECKING:
    from tensordict import TensorDictBase


def generalized_advantage_estimate(
    gamma: float,
    lambda_: float,
    value: torch.Tensor,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantage, value_target)``, each shaped like ``value``: time is dimension ``-2``.

    ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)`` and
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``; ``value_target = A + V``.
    """
    if not value.shape == next_value.shape == reward.shape:
        raise ValueError(
            f"GAE needs value, next_value and reward of one shape, got {tuple(value.shape)}, "
            f"{tuple(next_value.shape)} and {tuple(reward.shape)}."
        )
    not_terminated = 1.0 - terminated.to(value.dtype)
    delta = reward.to(value.dtype) + gamma * not_terminated * next_value - value
    decay = (gamma * lambda_) * (1.0 - done.to(value.dtype))
    scan = numpy_scan if delta.device.type == "cpu" else torch_scan
    advantage = scan(delta, decay)
    return advantage, advantage + value


def add_advantages(
    batch: TensorDictBase, value: torch.Tensor, next_value: torch.Tensor, gamma: float, lambda_: float
) -> TensorDictBase:
    """GAE over a sampled ``[num_envs, T]`` batch from the critic's values of its observations
    and next observations; writes the old values, ``advantage`` and ``value_target`` into it."""
    keys = PPO_KEYS
    with torch.no_grad():
        advantage, value_target = generalized_advantage_estimate(
            gamma,
            lambda_,
            value,
            next_value,
            batch["next", "reward"],
            batch["next", "done"],
            batch["next", "terminated"],
        )
    batch[keys.old_value] = value
    batch["next", keys.old_value] = next_value
    batch[keys.advantage] = advantage
    batch[keys.value_target] = value_target
    return batch


def numpy_scan(delta: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """``A_t = delta_t + decay_t * A_{t+1}`` backwards over dimension ``-2``, on CPU tensors.

    A numpy step costs about a microsecond where a torch op costs several, which is what a
    scan over a long rollout (one env, 2,048 steps) is made of.
    """
    deltas, decays = delta.detach().numpy(), decay.detach().numpy()
    advantage = np.empty_like(deltas)
    running = np.zeros_like(deltas[..., -1, :])
    for t in range(deltas.shape[-2] - 1, -1, -1):
        running = deltas[..., t, :] + decays[..., t, :] * running
        advantage[..., t, :] = running
    return torch.from_numpy(advantage)


def torch_scan(delta: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """The same scan with torch ops, for tensors on an accelerator (no copy to the host)."""
    deltas, decays = delta.unbind(-2), decay.unbind(-2)
    advantages = [deltas[-1]]
    for t in range(len(deltas) - 2, -1, -1):
        advantages.append(torch.addcmul(deltas[t], decays[t], advantages[-1]))
    return torch.stack(advantages[::-1], dim=-2)
