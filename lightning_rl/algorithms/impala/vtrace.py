"""V-trace targets over ``[*batch, T, 1]`` sequences, on torchrl's ``vtrace_advantage_estimate``.

torchrl computes the V-trace value targets ``v_s`` (Espeholt et al. 2018, eq. 1) with the trace
cut at every ``done`` step and the TD error of a step bootstrapped from the next value unless
the step ``terminated``; truncated steps (a time limit, or the cut at a fragment's or a
multi-agent segment's end) bootstrap from the value of their true next observation. Its
policy-gradient advantage clips the importance ratio with the same threshold as the targets;
IMPALA's ``vtrace_clip_pg_rho_threshold`` may differ, so the advantage is formed here from
torchrl's ``v_s``:

    A_t = min(pg_rho_bar, rho_t) * (r_t + gamma * (1 - terminated_t) * v_{t+1} - V(x_t)),

where ``v_{t+1}`` is ``v_s`` of the next step, or ``V(x_{t+1})`` (the true next observation's
value) when step ``t`` ended its episode or is the last of the sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchrl.objectives.value.functional import vtrace_advantage_estimate


def vtrace(
    *,
    behaviour_log_prob: torch.Tensor,
    target_log_prob: torch.Tensor,
    value: torch.Tensor,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    clip_rho_threshold: float = 1.0,
    clip_pg_rho_threshold: float = 1.0,
    clip_c_threshold: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v_s, pg_advantages)``; every input is ``[*batch, T, 1]``, time on dim -2, no gradients."""
    with torch.no_grad():
        _, vs = vtrace_advantage_estimate(
            gamma,
            target_log_prob,
            behaviour_log_prob,
            value,
            next_value,
            reward,
            done,
            terminated,
            rho_thresh=clip_rho_threshold,
            c_thresh=clip_c_threshold,
            time_dim=-2,
        )
        vs_next = torch.cat([vs[..., 1:, :], next_value[..., -1:, :]], dim=-2)
        vs_next = torch.where(done, next_value, vs_next)
        pg_rho = (target_log_prob - behaviour_log_prob).exp().clamp_max(clip_pg_rho_threshold)
        not_terminated = (~terminated).to(value.dtype)
        advantages = pg_rho * (reward + gamma * not_terminated * vs_next - value)
    return vs, advantages


def bootstrap_next_values(
    value: torch.Tensor, batch: Any, value_fn: Callable[[Any], torch.Tensor]
) -> torch.Tensor:
    """``V(x_{t+1})`` for every step of ``[*batch, T]`` sequences, from ``value`` (``[*batch, T, 1]``)
    where the next observation is the next step's, and from ``value_fn`` only where it is not:
    the last step and truncated steps. ``value_fn`` gets those steps' rows of ``batch`` (a flat
    ``[K]`` TensorDict; it reads ``("next", "observation")``, and a memory model also the
    ``next_recurrent_state``) and returns ``[K, 1]``. Terminated steps get 0 (V-trace
    multiplies them by 0 anyway); one extra value forward over a few rows instead of a second
    pass over the whole batch (what dominates with a CNN)."""
    done = batch["next", "done"]
    terminated = batch["next", "terminated"]
    next_value = torch.zeros_like(value)
    next_value[..., :-1, :] = value[..., 1:, :]
    needs_bootstrap = (done & ~terminated).clone()
    needs_bootstrap[..., -1, :] |= ~terminated[..., -1, :]
    next_value = next_value.masked_fill(done, 0.0)
    rows = needs_bootstrap.squeeze(-1)
    if bool(rows.any()):
        next_value[rows] = value_fn(batch[rows]).to(value.dtype)
    return next_value
