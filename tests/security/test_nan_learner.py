"""A non-finite loss or gradient never updates the weights: the step is skipped, counted, and N
in a row stop training naming the policy and the first non-finite batch key.

The guard sits on Lightning's backward/optimizer-step hooks of the shared Algorithm base, so
automatic optimisation (PPO, IMPALA, APPO, BC, MARWIL, plugins) and manual optimisation (DQN,
SAC, CQL, DreamerV3) pass through the same code; PPO, DQN and SAC stand for both kinds here.
"""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl.algorithms.dqn import DQN
from lightning_rl.algorithms.non_finite import first_non_finite_key
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.algorithms.sac import SAC
from lightning_rl.connectors.learner import LearnerConnector
from lightning_rl.errors import ConfigError, NonFiniteError


class PoisonRewards(LearnerConnector):
    """Writes NaN into the sampled rewards of the listed calls (1-based; empty: every call)."""

    def __init__(self, calls: list[int] | None = None) -> None:
        self.calls = list(calls or [])
        self.count = 0

    def setup(self, observation_space, action_space) -> None:
        self.count = 0

    def __call__(self, batch):
        self.count += 1
        if not self.calls or self.count in self.calls:
            reward = batch["next", "reward"]
            batch["next", "reward"] = torch.where(torch.rand_like(reward) < 0.5, float("nan"), reward)
        return batch


class Snapshot(pl.Callback):
    """The weights at the start of one iteration (epoch)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.weights: dict[str, torch.Tensor] | None = None

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            self.weights = copy.deepcopy(module.state_dict())


def fit(algo, tmp_path, max_epochs, callbacks=()):
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    trainer.fit(algo)
    return trainer


PPO_SMALL = dict(
    num_envs_per_env_runner=4,
    rollout_fragment_length=64,
    train_batch_size=256,
    minibatch_size=128,
    num_epochs=2,  # 2 passes x 2 minibatches = 4 updates per iteration
    seed=0,
)


def test_a_poisoned_batch_is_skipped_counted_and_leaves_the_weights_alone(tmp_path):
    algo = PPO("CartPole-v1", learner_connector=[PoisonRewards([3])], **PPO_SMALL)
    snapshot = Snapshot(epoch=2)
    trainer = fit(algo, tmp_path, max_epochs=3, callbacks=[snapshot])
    after = algo.state_dict()
    assert all(torch.equal(snapshot.weights[k], after[k]) for k in after), (
        "the poisoned iteration moved weights"
    )
    assert trainer.callback_metrics["learners/default_policy/num_non_finite_updates_skipped"] == 4
    assert all(torch.isfinite(p).all() for p in algo.parameters())


def test_the_iteration_after_a_poisoned_one_learns_again(tmp_path):
    algo = PPO("CartPole-v1", learner_connector=[PoisonRewards([2])], **PPO_SMALL)
    snapshot = Snapshot(epoch=2)
    trainer = fit(algo, tmp_path, max_epochs=3, callbacks=[snapshot])
    after = algo.state_dict()
    assert not all(torch.equal(snapshot.weights[k], after[k]) for k in after)
    assert trainer.callback_metrics["learners/default_policy/num_non_finite_updates_skipped"] == 0
    assert all(torch.isfinite(p).all() for p in algo.parameters())


def test_ppo_stops_after_n_poisoned_updates_in_a_row_naming_policy_and_key(tmp_path):
    algo = PPO(
        "CartPole-v1", learner_connector=[PoisonRewards()], max_consecutive_non_finite_updates=3, **PPO_SMALL
    )
    with pytest.raises(
        NonFiniteError,
        match=r"Policy 'default_policy': 3 updates in a row had a non-finite loss or gradient.*"
        r"first non-finite input is batch key '?\(?'?(advantage|value_target|next)",
    ):
        fit(algo, tmp_path, max_epochs=5)
    assert all(torch.isfinite(p).all() for p in algo.parameters()), "no NaN step was taken before stopping"


def test_dqn_manual_optimisation_is_guarded_too(tmp_path):
    algo = DQN(
        "CartPole-v1",
        learner_connector=[PoisonRewards()],
        num_steps_sampled_before_learning_starts=64,
        train_batch_size=32,
        rollout_fragment_length=64,
        max_consecutive_non_finite_updates=5,
        seed=0,
    )
    with pytest.raises(
        NonFiniteError, match=r"Policy 'default_policy': 5 updates in a row.*\('next', 'reward'\)"
    ):
        fit(algo, tmp_path, max_epochs=20)
    assert all(torch.isfinite(p).all() for p in algo.parameters())


def test_sac_skips_all_three_of_its_losses_together(tmp_path):
    algo = SAC(
        "Pendulum-v1",
        learner_connector=[PoisonRewards()],
        num_steps_sampled_before_learning_starts=64,
        train_batch_size=32,
        rollout_fragment_length=64,
        max_consecutive_non_finite_updates=4,
        seed=0,
    )
    with pytest.raises(NonFiniteError, match=r"Policy 'default_policy': 4 updates in a row"):
        fit(algo, tmp_path, max_epochs=20)
    assert all(torch.isfinite(p).all() for p in algo.parameters())


def test_first_non_finite_key_follows_the_batch_order():
    from tensordict import TensorDict

    batch = TensorDict(
        {
            "observation": torch.zeros(2, 3),
            "action": torch.tensor([0, 1]),
            "next": {"reward": torch.tensor([[1.0], [float("inf")]])},
            "advantage": torch.tensor([float("nan"), 0.0]),
        },
        batch_size=[2],
    )
    assert first_non_finite_key(batch) == ("next", "reward")
    assert first_non_finite_key({"p1": batch}) == ("p1", "next", "reward")
    assert first_non_finite_key(TensorDict({"x": torch.ones(2)}, batch_size=[2])) is None


def test_the_limit_is_checked():
    with pytest.raises(
        ConfigError, match=r"max_consecutive_non_finite_updates must be an integer >= 1, got 0"
    ):
        PPO("CartPole-v1", max_consecutive_non_finite_updates=0)


def test_dreamerv3_counts_one_skip_per_update_across_its_three_optimizers(tmp_path):
    from lightning_rl.algorithms.dreamerv3 import DreamerV3

    algo = DreamerV3(
        "CartPole-v1",
        model_size="nano",
        batch_size_B=4,
        batch_length_T=8,
        horizon_H=5,
        learner_connector=[PoisonRewards()],
        num_steps_sampled_before_learning_starts=64,
        max_consecutive_non_finite_updates=3,
        seed=0,
    )
    with pytest.raises(NonFiniteError, match=r"Policy 'default_policy': 3 updates in a row"):
        fit(algo, tmp_path, max_epochs=20)
    assert algo._non_finite_guard.num_skipped_lifetime == 3, "three optimizers, one update each time"
    assert all(torch.isfinite(p).all() for p in algo.parameters())
