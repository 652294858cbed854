"""V-trace targets against hand computations: clipping, termination, truncation, layouts."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from lightning_rl.algorithms.impala import bootstrap_next_values, vtrace

GAMMA = 0.9


def column(values, dtype=torch.float32) -> torch.Tensor:
    """One row of a ``[1, T, 1]`` sequence."""
    return torch.tensor(values, dtype=dtype).reshape(1, -1, 1)


def run(
    ratios, done=(False, False, False), terminated=(False, False, False), next_values=(2.0, 3.0, 4.0), **kw
):
    """values 1, 2, 3; rewards 1, 0, 2; behaviour log-prob 0, target log-prob log(ratio)."""
    return vtrace(
        behaviour_log_prob=column([0.0, 0.0, 0.0]),
        target_log_prob=column([math.log(r) for r in ratios]),
        value=column([1.0, 2.0, 3.0]),
        next_value=column(next_values),
        reward=column([1.0, 0.0, 2.0]),
        done=column(done, torch.bool),
        terminated=column(terminated, torch.bool),
        gamma=GAMMA,
        **kw,
    )


def flat(t: torch.Tensor) -> list[float]:
    return [round(x, 5) for x in t.reshape(-1).tolist()]


def test_targets_and_advantages_with_clipped_importance_ratios():
    # rho = (0.5, 2, 1) -> clipped to (0.5, 1, 1); c likewise. By hand, from the last step:
    # delta2 = 2 + .9*4 - 3 = 2.6 -> v2 = 5.6
    # delta1 = 0 + .9*3 - 2 = 0.7 -> v1 = 2 + 0.7 + .9*1*2.6 = 5.04
    # delta0 = .5 * (1 + .9*2 - 1) = 0.9 -> v0 = 1 + 0.9 + .9*.5*3.04 = 3.268
    vs, advantages = run([0.5, 2.0, 1.0])
    assert flat(vs) == pytest.approx([3.268, 5.04, 5.6])
    # A_t = clipped rho * (r + gamma * v_{t+1} - V): .5*(1 + .9*5.04 - 1), 1*(.9*5.6 - 2), 2.6
    assert flat(advantages) == pytest.approx([2.268, 3.04, 2.6])


def test_policy_gradient_ratios_have_their_own_clip():
    vs, advantages = run([0.5, 2.0, 1.0], clip_pg_rho_threshold=0.25)
    assert flat(vs) == pytest.approx([3.268, 5.04, 5.6])  # the targets keep clip_rho_threshold = 1
    assert flat(advantages) == pytest.approx([0.25 * 4.536, 0.25 * 3.04, 0.25 * 2.6])


def test_a_higher_rho_threshold_lets_large_ratios_through():
    _, advantages = run([0.5, 2.0, 1.0], clip_rho_threshold=3.0, clip_pg_rho_threshold=3.0)
    # delta1 = 2 * 0.7 = 1.4 now, and c1 stays clipped at 1: v1 = 2 + 1.4 + .9*2.6 = 5.74
    assert flat(advantages)[1] == pytest.approx(2.0 * (0.9 * 5.6 - 2.0))
    assert flat(advantages)[0] == pytest.approx(0.5 * (1 + 0.9 * 5.74 - 1))


def test_termination_cuts_the_trace_and_does_not_bootstrap():
    # step 1 terminated: delta1 = 0 - 2 = -2 -> v1 = 0; step 2 starts a new episode (v2 = 5.6)
    # v0 = 1 + 0.9 + .9*.5*(-2) = 1.0; A0 = .5*(1 + .9*0 - 1) = 0; A1 = -2
    vs, advantages = run(
        [0.5, 2.0, 1.0], done=(False, True, False), terminated=(False, True, False), next_values=(2, 99, 4)
    )
    assert flat(vs) == pytest.approx([1.0, 0.0, 5.6])
    assert flat(advantages) == pytest.approx([0.0, -2.0, 2.6])


def test_truncation_bootstraps_from_the_true_next_observation():
    # step 1 truncated, V(final obs) = 10: delta1 = .9*10 - 2 = 7 -> v1 = 9 (trace cut after it)
    # v0 = 1 + 0.9 + .9*.5*7 = 5.05; A0 = .5*(1 + .9*9 - 1) = 4.05; A1 = 7
    vs, advantages = run(
        [0.5, 2.0, 1.0], done=(False, True, False), terminated=(False, False, False), next_values=(2, 10, 4)
    )
    assert flat(vs) == pytest.approx([5.05, 9.0, 5.6])
    assert flat(advantages) == pytest.approx([4.05, 7.0, 2.6])


def reference_vtrace(rho, value, next_value, reward, done, terminated, rho_bar=1.0, pg_bar=1.0, c_bar=1.0):
    """The paper's recursion for one sequence, in plain Python."""
    steps = len(rho)
    vs = [0.0] * steps
    acc = 0.0
    for t in reversed(range(steps)):
        boot = 0.0 if terminated[t] else GAMMA * next_value[t]
        delta = min(rho_bar, rho[t]) * (reward[t] + boot - value[t])
        carry = 0.0 if (done[t] or t == steps - 1) else GAMMA * min(c_bar, rho[t]) * acc
        acc = delta + carry
        vs[t] = value[t] + acc
    adv = []
    for t in range(steps):
        nxt = next_value[t] if (done[t] or t == steps - 1) else vs[t + 1]
        boot = 0.0 if terminated[t] else GAMMA * nxt
        adv.append(min(pg_bar, rho[t]) * (reward[t] + boot - value[t]))
    return vs, adv


def test_rows_of_a_batch_are_independent_sequences_along_time():
    torch.manual_seed(0)
    n, steps = 3, 7
    value = torch.randn(n, steps, 1)
    next_value = torch.randn(n, steps, 1)
    reward = torch.randn(n, steps, 1)
    log_ratio = torch.randn(n, steps, 1)
    done = torch.rand(n, steps, 1) < 0.3
    terminated = done & (torch.rand(n, steps, 1) < 0.5)
    vs, adv = vtrace(
        behaviour_log_prob=torch.zeros(n, steps, 1),
        target_log_prob=log_ratio,
        value=value,
        next_value=next_value,
        reward=reward,
        done=done,
        terminated=terminated,
        gamma=GAMMA,
        clip_rho_threshold=1.2,
        clip_pg_rho_threshold=0.8,
    )
    for i in range(n):
        ref_vs, ref_adv = reference_vtrace(
            log_ratio[i, :, 0].exp().tolist(),
            value[i, :, 0].tolist(),
            next_value[i, :, 0].tolist(),
            reward[i, :, 0].tolist(),
            done[i, :, 0].tolist(),
            terminated[i, :, 0].tolist(),
            rho_bar=1.2,
            pg_bar=0.8,
        )
        assert vs[i, :, 0].tolist() == pytest.approx(ref_vs, abs=1e-5)
        assert adv[i, :, 0].tolist() == pytest.approx(ref_adv, abs=1e-5)


def test_multi_agent_segments_in_one_flat_sequence_equal_separate_sequences():
    """The multi-agent runner's ``[M]`` layout: segments end done; V-trace over ``[1, M]`` must not
    let one segment's trace leak into the previous one."""
    torch.manual_seed(1)
    lengths = [3, 4, 2]
    total = sum(lengths)
    args = {
        "behaviour_log_prob": torch.zeros(1, total, 1),
        "target_log_prob": torch.randn(1, total, 1) * 0.5,
        "value": torch.randn(1, total, 1),
        "next_value": torch.randn(1, total, 1),
        "reward": torch.randn(1, total, 1),
    }
    done = torch.zeros(1, total, 1, dtype=torch.bool)
    ends = torch.tensor(lengths).cumsum(0) - 1
    done[0, ends] = True
    terminated = torch.zeros_like(done)
    terminated[0, ends[0]] = True  # the first segment terminated, the others were cut (truncated)
    vs, adv = vtrace(**args, done=done, terminated=terminated, gamma=GAMMA)
    start = 0
    for length in lengths:
        part = slice(start, start + length)
        seg_vs, seg_adv = vtrace(
            **{k: v[:, part] for k, v in args.items()},
            done=done[:, part],
            terminated=terminated[:, part],
            gamma=GAMMA,
        )
        assert torch.allclose(vs[:, part], seg_vs, atol=1e-6)
        assert torch.allclose(adv[:, part], seg_adv, atol=1e-6)
        start += length


def test_bootstrap_values_come_from_the_next_step_or_the_true_next_observation():
    # obs = x, next obs = x', V(o) = 10 * o, so every value says where it came from.
    obs = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    next_obs = torch.tensor([[2.0, 7.0, 4.0, 5.0]])  # step 1 ended: its true next obs is 7
    done = torch.tensor([[False, True, False, False]]).unsqueeze(-1)
    for terminated_step_1, expected in ((False, [20.0, 70.0, 40.0, 50.0]), (True, [20.0, 0.0, 40.0, 50.0])):
        terminated = torch.tensor([[False, terminated_step_1, False, False]]).unsqueeze(-1)
        batch = TensorDict(
            {
                "observation": obs.unsqueeze(-1),
                "next": {"observation": next_obs.unsqueeze(-1), "done": done, "terminated": terminated},
            },
            batch_size=[1, 4],
        )
        calls = []

        def value_fn(rows, calls=calls):
            calls.append(rows.shape[0])
            return 10.0 * rows["next", "observation"]

        next_value = bootstrap_next_values(10.0 * obs.unsqueeze(-1), batch, value_fn)
        assert flat(next_value) == pytest.approx(expected)
        # Only the truncated step and the last step needed the value network.
        assert calls == [1 if terminated_step_1 else 2]
