"""Replay experience: n-step returns, prioritized sampling, update counts, buffer checkpoints."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from lightning_rl.algorithms.dqn import DQN, DQNConfig
from lightning_rl.data.n_step import n_step_transitions
from lightning_rl.data.segment_tree import MinSegmentTree, SumSegmentTree
from lightning_rl.data.transition_replay import (
    PrioritizedReplaySampler,
    ReplayBufferConfig,
    ReplayDataModule,
    make_replay_buffer,
    resolve_replay_buffer_config,
)
from lightning_rl.errors import ConfigError
from lightning_rl.training_run import TrainingRun
from tests.envs import CountingEnv


def rollout(terminated, truncated, horizon=6):
    """A ``[2, horizon]`` batch: observation t, next observation 100 + t + 1 (per row), reward 1."""
    terminated = torch.tensor(terminated, dtype=torch.bool).unsqueeze(-1)
    truncated = torch.tensor(truncated, dtype=torch.bool).unsqueeze(-1)
    obs = torch.arange(2 * horizon, dtype=torch.float32).view(2, horizon, 1)
    return TensorDict(
        {
            "observation": obs,
            "action": torch.zeros(2, horizon, dtype=torch.int64),
            "next": {
                "observation": obs + 101,
                "reward": torch.ones(2, horizon, 1),
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated | truncated,
            },
        },
        [2, horizon],
    )


def test_n_step_returns_match_a_hand_computation():
    # Row 0 terminates at t=2; row 1 is truncated at t=1; both fragments end at t=5 mid-episode.
    batch = rollout(
        terminated=[[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
        truncated=[[0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]],
    )
    out = n_step_transitions(batch, n_step=3, gamma=0.5)
    # Returns: 3 steps 1 + .5 + .25, cut short by the episode end or the fragment end.
    assert out["next", "reward"].squeeze(-1).tolist() == [
        [1.75, 1.5, 1.0, 1.75, 1.5, 1.0],
        [1.5, 1.0, 1.75, 1.75, 1.5, 1.0],
    ]
    assert out["steps_to_next_obs"].squeeze(-1).tolist() == [[3, 2, 1, 3, 2, 1], [2, 1, 3, 3, 2, 1]]
    # Next observation: that of the window's last step (the terminal/final one at episode ends).
    assert out["next", "observation"].squeeze(-1).tolist() == [
        [103.0, 103.0, 103.0, 106.0, 106.0, 106.0],
        [108.0, 108.0, 111.0, 112.0, 112.0, 112.0],
    ]
    # Termination inside the window stops the bootstrap; truncation does not.
    assert out["next", "terminated"].squeeze(-1).tolist() == [
        [True, True, True, False, False, False],
        [False] * 6,
    ]
    assert out["next", "truncated"].squeeze(-1)[1].tolist() == [True, True, False, False, False, False]
    assert torch.equal(out["observation"], batch["observation"])
    assert n_step_transitions(batch, n_step=1, gamma=0.5) is batch


def test_segment_trees_match_brute_force():
    rng = np.random.default_rng(0)
    capacity = 37  # not a power of two
    sums, mins = SumSegmentTree(capacity), MinSegmentTree(capacity)
    values = rng.uniform(0.1, 5.0, capacity)
    index = torch.arange(capacity)
    sums[index] = torch.as_tensor(values)
    mins[index] = torch.as_tensor(values)
    for start, end in [(0, capacity), (3, 20), (10, 11), (36, 37)]:
        assert sums.query(start, end) == pytest.approx(values[start:end].sum())
        assert mins.query(start, end) == pytest.approx(values[start:end].min())
    mass = rng.uniform(0, values.sum(), 1000)
    expected = np.searchsorted(np.cumsum(values), mass, side="right")
    assert sums.scan_lower_bound(torch.as_tensor(mass)).tolist() == expected.tolist()
    sums[torch.tensor([4, 4])] = torch.tensor([0.0, 0.0])
    assert sums.query(0, capacity) == pytest.approx(values.sum() - values[4])


def test_prioritized_sampling_probabilities_and_weights_match_a_hand_computation():
    alpha, beta, eps = 0.5, 0.4, 1e-6
    config = ReplayBufferConfig(type="PrioritizedReplayBuffer", capacity=5, alpha=alpha, beta=beta, eps=eps)
    buffer = make_replay_buffer(config, torch.Generator().manual_seed(0))
    assert isinstance(buffer.sampler, PrioritizedReplaySampler)
    buffer.extend(TensorDict({"x": torch.arange(4.0)}, [4]))
    td_error = torch.tensor([1.0, 2.0, 3.0, 4.0])
    buffer.update_priority(torch.arange(4), td_error)
    priority = (td_error + eps) ** alpha
    probability = priority / priority.sum()
    weight = (priority / priority.min()) ** -beta  # (N P(i))^-beta normalised by its max
    sample = buffer.sample(40_000)
    index = sample["index"]
    frequency = torch.bincount(index, minlength=4).float() / index.numel()
    assert torch.allclose(frequency, probability, atol=0.01)
    assert torch.allclose(sample["priority_weight"], weight[index], rtol=1e-5)
    # New data enters at the largest priority seen so far (4), so it is replayed soon.
    buffer.extend(TensorDict({"x": torch.tensor([4.0])}, [1]))
    assert buffer.sampler._sum_tree[4] == pytest.approx((4.0 + eps) ** alpha, rel=1e-6)


def test_replay_buffer_config_errors_name_the_bad_value_and_the_choices():
    assert resolve_replay_buffer_config({"capacity": 10}, {"type": "PrioritizedReplayBuffer"}).prioritized
    with pytest.raises(ConfigError, match=r"Unknown replay_buffer_config key 'capacty'.*capacity"):
        resolve_replay_buffer_config({"capacty": 10})
    with pytest.raises(
        ConfigError, match=r"Unknown replay buffer type 'Prioritized'.*PrioritizedReplayBuffer"
    ):
        resolve_replay_buffer_config({"type": "Prioritized"})
    with pytest.raises(ConfigError, match="capacity must be a positive integer, got -1"):
        resolve_replay_buffer_config({"capacity": -1})


def test_a_capacity_smaller_than_the_batch_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"capacity \(100\) is smaller than train_batch_size \(256\)"):
        DQN("CartPole-v1", train_batch_size=256, replay_buffer_config={"capacity": 100})


def test_training_intensity_sets_a_deterministic_number_of_updates_per_iteration():
    def datamodule(**settings):
        algo = DQN(CountingEnv, num_envs_per_env_runner=2, train_batch_size=32, **settings)
        module = ReplayDataModule()
        module.attach(algo)
        return module

    # 2 envs x 24 steps = 48 sampled; 48 x 1 / 32 = 1.5 updates: alternately 1 and 2.
    fractional = datamodule(rollout_fragment_length=24, training_intensity=1.0)
    assert [fractional.updates_in_iteration(i) for i in range(6)] == [1, 2, 1, 2, 1, 2]
    # RLlib's native ratio without training_intensity: one update per iteration.
    assert datamodule(rollout_fragment_length=24).updates_in_iteration(5) == 1
    assert datamodule(rollout_fragment_length=64, training_intensity=8).updates_in_iteration(0) == 32
    with pytest.raises(ConfigError, match=r"training_intensity=0.25 .* 0.75 gradient updates per iteration"):
        datamodule(rollout_fragment_length=48, training_intensity=0.25)


def test_the_first_iteration_samples_until_learning_starts_and_every_iteration_learns(quiet_trainer_kwargs):
    algo = DQN(
        CountingEnv,
        num_envs_per_env_runner=2,
        rollout_fragment_length=16,
        train_batch_size=16,
        training_intensity=2.0,
        num_steps_sampled_before_learning_starts=100,
        replay_buffer_config={"type": "ReplayBuffer", "capacity": 1000},
    )
    trainer = pl.Trainer(**{**quiet_trainer_kwargs, "max_epochs": 3, "limit_val_batches": 0})
    trainer.fit(algo)
    # Iteration 0: ceil(100 / 2 envs) = 50 steps per env; then 16 per env per iteration.
    assert algo.num_env_steps_sampled_lifetime == 100 + 2 * 32
    assert int(algo.num_grad_updates_lifetime) == 3 * 4  # 32 steps x 2 / 16 per iteration
    assert trainer.callback_metrics["replay_buffer/default_policy/num_entries"] == 164


def _small_prioritized_config(tmp_path, checkpoint_replay_buffer=True):
    return (
        DQNConfig(defaults="native")
        .environment("CartPole-v1")
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=32)
        .training(
            train_batch_size=16,
            training_intensity=1.0,
            num_steps_sampled_before_learning_starts=64,
            replay_buffer_config={"type": "PrioritizedReplayBuffer", "capacity": 500},
            checkpoint_replay_buffer=checkpoint_replay_buffer,
        )
        .debugging(seed=5)
        .trainer(default_root_dir=str(tmp_path))
    )


def _buffer_contents(buffer):
    size = len(buffer)
    data = buffer.storage.get(slice(0, size))
    return size, data.clone(), buffer.writer.state_dict()["_cursor"], buffer.sampler._sum_tree.leaves(size)


def test_buffer_checkpoint_round_trip_with_weights_only_and_resume(tmp_path):
    run = _small_prioritized_config(tmp_path).build_algo()
    run.train()
    run.train()
    buffer = run.datamodule.buffers["default_policy"]
    size, data, cursor, priorities = _buffer_contents(buffer)
    assert size == 64 + 64 and cursor == size
    assert len(set(priorities.tolist())) > 1, "TD errors have updated the priorities"
    path = run.save(tmp_path / "ckpt")
    run.stop()

    checkpoint = torch.load(path, weights_only=True)  # plain tensors and numbers only
    saved = checkpoint["ReplayDataModule"]["replay_buffers"]["default_policy"]
    assert saved["size"] == size and saved["storage"]["observation"].shape == (size, 4)

    restored = TrainingRun.from_checkpoint(path, trainer_kwargs={"default_root_dir": str(tmp_path)})
    restored.datamodule.attach(restored.algorithm)
    restored.datamodule.setup("fit")
    new_size, new_data, new_cursor, new_priorities = _buffer_contents(
        restored.datamodule.buffers["default_policy"]
    )
    assert (new_size, new_cursor) == (size, cursor)
    assert (new_data.exclude("index") == data.exclude("index")).all()
    assert np.array_equal(new_priorities, priorities)
    result = restored.train()
    assert result["num_env_steps_sampled_lifetime"] == size + 64, "sampling continues, no new warm-up"
    continued = restored.datamodule.buffers["default_policy"]
    assert len(continued) == size + 64
    kept = continued.storage.get(slice(0, size)).exclude("index")
    assert (kept == data.exclude("index")).all(), "the restored transitions are kept"
    restored.stop()


def test_buffers_stay_out_of_checkpoints_unless_asked(tmp_path):
    run = _small_prioritized_config(tmp_path, checkpoint_replay_buffer=False).build_algo()
    run.train()
    path = run.save(tmp_path / "ckpt")
    run.stop()
    state = torch.load(path, weights_only=True)["ReplayDataModule"]
    assert "replay_buffers" not in state
    assert state["num_env_steps_sampled_lifetime"] == 64


def test_update_priorities_moves_sampling_towards_large_td_errors(quiet_trainer_kwargs):
    algo = DQN(
        "CartPole-v1",
        rollout_fragment_length=64,
        train_batch_size=64,
        num_steps_sampled_before_learning_starts=0,
        replay_buffer_config={"type": "PrioritizedReplayBuffer", "capacity": 64, "alpha": 1.0},
        seed=0,
    )
    datamodule = ReplayDataModule()
    pl.Trainer(**{**quiet_trainer_kwargs, "max_epochs": 1, "limit_val_batches": 0}).fit(
        algo, datamodule=datamodule
    )
    td_error = torch.zeros(64)
    td_error[7] = 100.0
    datamodule.update_priorities("default_policy", torch.arange(64), td_error)
    (group,) = datamodule.minibatch_groups(1)
    assert group.batch_size == (1, 64)
    assert math.isclose((group["index"] == 7).float().mean().item(), 1.0, abs_tol=0.1)
