"""N-step transitions over a sampled ``[num_envs, T]`` batch (a learner connector for replay).

Each transition ``t`` becomes ``(s_t, a_t, R_t, s_{t+k})`` with
``R_t = r_t + gamma r_{t+1} + ... + gamma^(k-1) r_{t+k-1}`` and ``k = min(n, steps until the
episode ends, steps until the fragment ends)``; ``("next", *)`` entries (observation,
terminated, truncated, done) are those of step ``t + k - 1`` and ``steps_to_next_obs = k``, the
key torchrl's TD estimators read to discount the bootstrap by ``gamma^k``.

Why not torchrl's ``MultiStep``: it gathers the later next-observation but keeps
``("next", "terminated")`` of step ``t``, so a transition a few steps before a termination
bootstraps from the terminal observation (checked on torchrl 0.14.1). Termination within the
window must stop the bootstrap; truncation must not (the value of the true final observation
is still the right bootstrap).

Transitions near the end of a fragment use fewer than ``n`` steps rather than waiting for
the next fragment: a k-step return with a ``gamma^k`` bootstrap is an equally valid target,
and it keeps the replay buffer free of half-finished transitions across iterations.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from lightning_rl.errors import ConfigError

STEPS_KEY = "steps_to_next_obs"


def n_step_transitions(batch: TensorDict, n_step: int, gamma: float) -> TensorDict:
    """Return a copy of ``batch`` (``[num_envs, T]``) with n-step rewards and next entries."""
    if n_step <= 1:
        return batch
    if batch.batch_dims != 2:
        raise ConfigError(
            f"n_step={n_step} needs time-ordered [num_envs, T] batches, got batch size "
            f"{tuple(batch.batch_size)} (multi-agent batches are flat per policy); use n_step=1."
        )
    num_envs, horizon = batch.batch_size
    reward = batch.get(("next", "reward"))
    done = batch.get(("next", "done")).reshape(num_envs, horizon)
    time = torch.arange(horizon, device=reward.device)
    last = time.expand(num_envs, horizon).clone()
    total = reward.clone()
    alive = ~done  # the episode continues after the step last[i, t]
    for k in range(1, n_step):
        later = time + k
        in_fragment = later < horizon
        later = later.clamp(max=horizon - 1)
        use = alive & in_fragment
        step_reward = reward[:, later] * use.reshape(num_envs, horizon, *([1] * (reward.dim() - 2)))
        total = total + (gamma**k) * step_reward
        last = torch.where(use, later.expand(num_envs, horizon), last)
        alive = use & ~done[:, later]
    rows = torch.arange(num_envs, device=reward.device).unsqueeze(-1).expand(num_envs, horizon)
    out = batch.clone(False)
    following = batch.get("next").exclude("reward")[rows, last]
    following.set("reward", total)
    out.set("next", following)
    steps = (last - time + 1).unsqueeze(-1)
    out.set(STEPS_KEY, steps)
    return out
