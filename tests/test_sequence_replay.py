"""Sequence replay (DreamerV3): runner batches to per-copy step streams, window sampling,
``is_first`` flags, update counts and the buffer in checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from lightning_rl.data.replay_schedule import updates_per_iteration
from lightning_rl.data.sequence_replay import SequenceReplayBuffer, to_sequence_steps
from lightning_rl.errors import CheckpointError, ConfigError


def runner_batch(is_init, terminated, truncated=None):
    """A ``[N, T]`` runner batch whose observation at row n, time t is ``100 n + t`` and whose
    next observation is ``100 n + t + 0.5`` (so the converted steps can be traced exactly);
    action ``t``, reward ``t + 1``."""
    is_init = torch.tensor(is_init, dtype=torch.bool)
    n, t = is_init.shape
    terminated = torch.tensor(terminated, dtype=torch.bool).unsqueeze(-1)
    truncated = (
        torch.zeros_like(terminated) if truncated is None else torch.tensor(truncated).bool().unsqueeze(-1)
    )
    obs = (100 * torch.arange(n).unsqueeze(1) + torch.arange(t)).float().unsqueeze(-1)
    return TensorDict(
        {
            "observation": obs,
            "action": torch.arange(t).expand(n, t).clone(),
            "is_init": is_init.unsqueeze(-1),
            "next": {
                "observation": obs + 0.5,
                "reward": (torch.arange(t) + 1.0).expand(n, t).unsqueeze(-1).clone(),
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated | truncated,
            },
        },
        [n, t],
    )


def test_runner_transitions_become_steps_with_is_first_at_every_episode_start():
    # Row 0: an episode starts at t=0 and terminates at t=1; the next one starts at t=2.
    # Row 1: continues an episode from an earlier fragment (no start in this fragment).
    batch = runner_batch(is_init=[[1, 0, 1, 0], [0, 0, 0, 0]], terminated=[[0, 1, 0, 0], [0, 0, 0, 0]])
    steps, lengths = to_sequence_steps(batch)
    assert lengths.tolist() == [6, 4]
    row = {name: value[0].squeeze(-1).tolist() for name, value in steps.items()}
    # first obs 0, then next-obs 0.5 and 1.5 (terminal); the new episode starts at obs 2.
    assert row["observation"] == [0.0, 0.5, 1.5, 2.0, 2.5, 3.5]
    assert row["is_first"] == [True, False, False, True, False, False]
    assert row["prev_action"] == [0, 0, 1, 0, 2, 3], "each step carries the action that led to it"
    assert row["reward"] == [0.0, 1.0, 2.0, 0.0, 3.0, 4.0], "first steps get no reward"
    assert row["is_terminated"] == [False, False, True, False, False, False]
    assert steps["observation"][1, :4].squeeze(-1).tolist() == [100.5, 101.5, 102.5, 103.5]
    assert not steps["is_first"][1].any()


def test_a_truncated_episode_is_not_terminal_and_the_next_one_starts_fresh():
    batch = runner_batch(is_init=[[1, 0, 1]], terminated=[[0, 0, 0]], truncated=[[0, 1, 0]])
    steps, _ = to_sequence_steps(batch)
    assert steps["is_terminated"][0].tolist() == [False] * 5
    assert steps["is_first"][0].tolist() == [True, False, False, True, False]


def filled_buffer(lengths, capacity=100, seed=0):
    """Streams ``k`` of the given lengths holding values ``1000 k + i`` at their i-th step,
    with ``is_first`` every 5 steps."""
    buffer = SequenceReplayBuffer(capacity, torch.Generator().manual_seed(seed))
    for k, length in enumerate(lengths):
        i = torch.arange(length)
        buffer.extend(
            buffer.stream((k, 0)),
            {
                "observation": (1000 * k + i).float().unsqueeze(-1),
                "prev_action": torch.zeros(length, dtype=torch.long),
                "reward": torch.zeros(length),
                "is_first": i % 5 == 0,
                "is_terminated": torch.zeros(length, dtype=torch.bool),
            },
        )
    return buffer


def test_windows_are_consecutive_steps_of_one_stream_with_their_is_first_flags():
    buffer = filled_buffer([30, 12, 3])
    windows = buffer.sample(2000, 8)
    obs = windows["observation"].squeeze(-1)
    stream, position = obs // 1000, obs % 1000
    assert (stream == stream[:, :1]).all(), "no window mixes two env copies"
    assert (position.diff(dim=1) == 1).all(), "steps are consecutive"
    assert (position[:, -1] < torch.tensor([30, 12, 3])[stream[:, 0].long()]).all(), (
        "no step past a stream's end"
    )
    assert set(stream[:, 0].long().tolist()) == {0, 1}, "a stream shorter than a window serves none"
    assert torch.equal(windows["is_first"], position % 5 == 0)
    # Uniform over all windows: 23 windows in stream 0, 5 in stream 1.
    share = (stream[:, 0] == 1).float().mean().item()
    assert abs(share - 5 / 28) < 0.03


def test_the_oldest_steps_are_overwritten_first_and_windows_never_wrap_across_the_seam():
    buffer = filled_buffer([25], capacity=10)
    assert len(buffer) == 10
    obs = buffer.sample(500, 4)["observation"].squeeze(-1)
    assert obs.min() >= 15 and obs.max() <= 24, "only the newest 10 steps are kept"
    assert (obs.diff(dim=1) == 1).all()
    state = buffer.state_dict()
    assert state["streams"][0]["steps"]["observation"].squeeze(-1).tolist() == list(range(15, 25))


def test_sampling_before_a_window_fits_is_one_clear_error():
    with pytest.raises(
        ConfigError, match=r"no window of batch_length_T=8 steps yet \(longest stream: 3 steps\)"
    ):
        filled_buffer([3]).sample(4, 8)


def test_buffer_state_round_trip_and_a_too_small_capacity_is_one_clear_error():
    buffer = filled_buffer([30, 12])
    restored = SequenceReplayBuffer(100)
    restored.load_state_dict(buffer.state_dict())
    assert restored.keys == buffer.keys and restored.count.tolist() == [30, 12]
    for a, b in zip(buffer.state_dict()["streams"], restored.state_dict()["streams"], strict=True):
        assert all(torch.equal(a["steps"][k], b["steps"][k]) for k in a["steps"])
    with pytest.raises(CheckpointError, match=r"holds 30 steps of env copy \(0, 0\), more than the 20"):
        SequenceReplayBuffer(20).load_state_dict(buffer.state_dict())


def test_updates_per_iteration_follow_the_training_ratio_exactly():
    # 64 env steps per iteration, 16 x 64 replayed steps per update.
    rate = updates_per_iteration(256, 64, 1024)
    assert rate == 16
    rate = updates_per_iteration(100, 64, 1024)  # 6.25 updates per iteration
    counts = [math.floor((i + 1) * rate) - math.floor(i * rate) for i in range(4)]
    assert counts == [6, 6, 6, 7]
