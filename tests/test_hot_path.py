"""PPO's lean hot path: one training step per iteration, the same minibatches, hooks and metrics.

PPO runs an iteration's ``num_epochs x minibatches`` updates inside one ``training_step``
(manual optimisation) on the :class:`IterationBatch` the OnPolicyDataModule yields. These tests
pin down what must not change with that: the minibatch plan (same shuffles as the
per-minibatch path, drawn from the checkpointed generator, so a resumed run continues the
sequence), Lightning's per-update hooks, and one row of ``learners/...`` means per iteration.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from tensordict import TensorDict

from lightning_rl.algorithms.logged_metrics import LearnerMetrics
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.algorithms.ppo.loss import PPOLossConfig, ppo_loss
from lightning_rl.data.on_policy import IterationBatch, take_rows

TINY = dict(train_batch_size=64, minibatch_size=16, num_epochs=2, evaluation_duration=1)
UPDATES_PER_ITERATION = 2 * 4  # num_epochs x (64 / 16)


def test_iteration_batch_draws_the_per_minibatch_paths_shuffles_and_wraps_around():
    data = TensorDict({"x": torch.arange(10)}, batch_size=[10])
    batch = IterationBatch(data, 4, 2, 3, torch.Generator().manual_seed(3))
    minibatches = [mb["x"] for mb in batch.minibatches()]
    assert len(batch) == len(minibatches) == 6
    assert all(mb.shape == (4,) for mb in minibatches), "every minibatch is full"
    expected = torch.Generator().manual_seed(3)
    for epoch in range(2):
        order = torch.randperm(10, generator=expected)  # one permutation per pass, as before
        for i in range(3):
            assert torch.equal(minibatches[3 * epoch + i], order[(torch.arange(4) + 4 * i) % 10])
    # Several policies: the same number of chunks for each, sized by its own rows.
    multi = IterationBatch(
        {"a": data, "b": TensorDict({"x": torch.arange(3)}, batch_size=[3])},
        {"a": 4, "b": 1},
        1,
        3,
        torch.Generator().manual_seed(0),
    )
    shapes = [(mb["a"]["x"].shape[0], mb["b"]["x"].shape[0]) for mb in multi.minibatches()]
    assert shapes == [(4, 1)] * 3


class HookCounter(pl.Callback):
    """Per iteration: training steps, backward passes (with their losses), optimizer steps."""

    def __init__(self) -> None:
        self.steps: dict[int, int] = {}
        self.losses: dict[int, list[float]] = {}
        self.optimizer_steps: dict[int, int] = {}
        self.generator_states: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        epoch = trainer.current_epoch
        self.steps[epoch] = self.steps.get(epoch, 0) + 1
        self.generator_states.setdefault(epoch, pl_module.minibatch_generator.get_state().clone())

    def on_before_backward(self, trainer, pl_module, loss):
        self.losses.setdefault(trainer.current_epoch, []).append(float(loss.detach()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        epoch = trainer.current_epoch
        self.optimizer_steps[epoch] = self.optimizer_steps.get(epoch, 0) + 1


def test_one_step_per_iteration_keeps_per_update_hooks_and_logs_iteration_means(
    quiet_trainer_kwargs, tmp_path
):
    counter, logger = HookCounter(), CSVLogger(save_dir=tmp_path, name="csv")
    algo = PPO("CartPole-v1", seed=0, **TINY)
    trainer = pl.Trainer(
        **{**quiet_trainer_kwargs, "logger": logger, "max_epochs": 2, "limit_val_batches": 0},
        callbacks=[counter],
    )
    trainer.fit(algo)
    assert trainer.global_step == 2 * UPDATES_PER_ITERATION
    assert counter.steps == {0: 1, 1: 1}, "one training step per iteration"
    assert counter.optimizer_steps == {0: UPDATES_PER_ITERATION, 1: UPDATES_PER_ITERATION}
    assert {e: len(v) for e, v in counter.losses.items()} == counter.optimizer_steps
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    learner_rows = [row for row in rows if "learners/default_policy/total_loss" in row]
    assert len(learner_rows) == 2, "learner stats reach the logger once per iteration"
    names = {
        f"learners/default_policy/{name}"
        for name in ("policy_loss", "vf_loss", "mean_kl_loss", "clip_fraction", "vf_explained_var")
    }
    assert names <= set(learner_rows[0]), sorted(learner_rows[0])
    for row, epoch in zip(learner_rows, (0, 1), strict=True):
        mean = sum(counter.losses[epoch]) / UPDATES_PER_ITERATION
        assert abs(row["learners/default_policy/total_loss"] - mean) <= 1e-4 * max(1.0, abs(mean))
        assert row["epoch"] == epoch and row["num_env_steps_sampled_lifetime"] == 64 * (epoch + 1)
    assert "learners/default_policy/total_loss" in trainer.callback_metrics  # callbacks see them too


def test_a_resumed_run_continues_the_minibatch_shuffles(quiet_trainer_kwargs, tmp_path):
    full = HookCounter()
    trainer = pl.Trainer(
        **{**quiet_trainer_kwargs, "max_epochs": 2, "limit_val_batches": 0}, callbacks=[full]
    )
    trainer.fit(PPO("CartPole-v1", seed=0, **TINY))

    first = pl.Trainer(**{**quiet_trainer_kwargs, "max_epochs": 1, "limit_val_batches": 0})
    first.fit(PPO("CartPole-v1", seed=0, **TINY))
    path = tmp_path / "after_one.ckpt"
    first.save_checkpoint(path)
    resumed = HookCounter()
    trainer = pl.Trainer(
        **{**quiet_trainer_kwargs, "max_epochs": 2, "limit_val_batches": 0}, callbacks=[resumed]
    )
    trainer.fit(PPO("CartPole-v1", seed=0, **TINY), ckpt_path=path)
    assert list(resumed.generator_states) == [1]
    assert torch.equal(resumed.generator_states[1], full.generator_states[1]), (
        "the resumed iteration must shuffle its minibatches as the uninterrupted run did"
    )
    assert trainer.global_step == 2 * UPDATES_PER_ITERATION


@pytest.mark.parametrize("masked", [False, True])
def test_deferred_ppo_diagnostics_equal_each_minibatchs_own_stats_averaged(masked):
    """PPOStats keep their diagnostics' inputs; LearnerMetrics computes them for all minibatches
    at once. The iteration means equal the means of each minibatch's stats computed alone."""
    config = PPOLossConfig(0.2, 0.3, 0.5, use_entropy=True, normalize_advantages=True, use_kl_loss=True)
    generator = torch.Generator().manual_seed(0)
    shape = (4, 6) if masked else (16,)

    def randn(*size):
        return torch.randn(*size, generator=generator)

    metrics, alone = LearnerMetrics(), []
    for _ in range(3):
        mask = (torch.rand(shape, generator=generator) > 0.3).float() if masked else None
        terms = ppo_loss(
            log_prob=0.3 * randn(*shape),
            old_log_prob=0.3 * randn(*shape),
            advantage=randn(*shape, 1),
            value=randn(*shape, 1),
            value_target=randn(*shape, 1),
            old_value=randn(*shape, 1),
            entropy=randn(*shape).abs(),
            config=config,
            entropy_coeff=0.01,
            kl_coeff=0.2,
            mask=mask,
        )
        stats = terms.deferred_stats()
        stats["extra"] = torch.tensor(1.0)  # what a subclass's compute_policy_loss may add
        metrics.add(stats, "p")
        alone.append({**terms.stats(), "extra": torch.tensor(1.0)})
    means = metrics.pop_means()
    assert set(means) == {f"learners/p/{name}" for name in alone[0]}
    assert {"mean_kl_loss", "clip_fraction", "vf_explained_var", "value_clip_fraction"} <= set(alone[0])
    for name in alone[0]:
        expected = torch.stack([stats[name] for stats in alone]).mean()
        torch.testing.assert_close(means[f"learners/p/{name}"], expected)
    assert metrics.pop_means() == {}, "popped once"


def test_take_rows_equals_tensordict_indexing():
    data = TensorDict(
        {
            "a": torch.arange(10),
            "next": TensorDict({"o": torch.randn(10, 3), "d": torch.rand(10, 1) > 0.5}, batch_size=[10]),
        },
        batch_size=[10],
    )
    index = torch.tensor([3, 3, 0, 9])
    assert (take_rows(data, index) == data[index]).all()
    sequences = data.reshape(5, 2)
    rows = take_rows(sequences, torch.tensor([4, 1]))
    assert rows.batch_size == (2, 2) and (rows == sequences[torch.tensor([4, 1])]).all()
