"""Intrinsic-reward learner connectors: bonuses by hand, and a sparse task only curiosity solves."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnReturn
from lightning_rl.connectors.learner import RND, CountBasedCuriosity
from lightning_rl.envs.classes import CombinationLock


def batch_of(next_obs):
    n = next_obs.shape[0]
    return TensorDict({"next": {"observation": next_obs, "reward": torch.zeros(n, 1)}}, batch_size=[n])


def test_count_based_bonus_is_coeff_over_sqrt_visits_and_survives_state_round_trips():
    curiosity = CountBasedCuriosity(intrinsic_reward_coeff=2.0, obs_decimals=0)
    curiosity.setup(spaces.Box(0, 10, (1,)), spaces.Discrete(2))
    out = curiosity(batch_of(torch.tensor([[1.0], [1.0], [2.0], [1.0]])))
    # cell 1 seen 3 times, cell 2 once, all counted before the bonus is computed
    expected = torch.tensor([2 / 3**0.5, 2 / 3**0.5, 2.0, 2 / 3**0.5])
    assert torch.allclose(out["next", "intrinsic_reward"][:, 0], expected)
    assert torch.allclose(out["next", "reward"][:, 0], expected)
    restored = CountBasedCuriosity(intrinsic_reward_coeff=2.0, obs_decimals=0)
    restored.set_state(curiosity.get_state())
    assert restored(batch_of(torch.tensor([[2.0]])))["next", "intrinsic_reward"].item() == pytest.approx(
        2 / 2**0.5
    )


def test_rnd_bonus_shrinks_on_familiar_observations():
    torch.manual_seed(0)
    rnd = RND(intrinsic_reward_coeff=1.0, lr=1e-2, updates_per_batch=20)
    rnd.setup(spaces.Box(-1, 1, (4,)), spaces.Discrete(2))
    familiar = torch.randn(64, 4)
    first = rnd(batch_of(familiar.clone()))["next", "intrinsic_reward"].mean()
    for _ in range(10):
        later = rnd(batch_of(familiar.clone()))["next", "intrinsic_reward"].mean()
    novel = rnd(batch_of(torch.randn(64, 4) * 3 + 5))["next", "intrinsic_reward"].mean()
    assert later < first and novel > later


def train_lock(learner_connector, tmp_path):
    # 30 cells: guessing opens the lock with probability 2**-30 per attempt. At 20 cells, PPO's
    # reward-free drift sometimes stumbled through, depending on float details such as the
    # number of torch threads; at 30 it never did in our runs, while curiosity needs ~20k steps.
    pl.seed_everything(0, verbose=False)
    algo = PPO(
        CombinationLock,
        {"length": 30, "max_steps": 150},
        learner_connector=learner_connector,
        num_envs_per_env_runner=8,
        train_batch_size=1024,
        minibatch_size=256,
        num_epochs=4,
        lr=1e-3,
        entropy_coeff=0.01,
        evaluation_duration=8,
        seed=0,
    )
    trainer = pl.Trainer(
        max_epochs=60,
        check_val_every_n_epoch=5,
        callbacks=[StopOnReturn(1.0)],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(algo)
    return float(trainer.callback_metrics["evaluation/episode_return_mean"]), trainer.callback_metrics


@pytest.mark.learning
def test_the_combination_lock_opens_with_curiosity_and_stays_shut_without(tmp_path):
    without, _ = train_lock(None, tmp_path)
    with_curiosity, metrics = train_lock([CountBasedCuriosity(intrinsic_reward_coeff=0.1)], tmp_path)
    assert without == 0.0
    assert with_curiosity == 1.0
    assert "learners/default_policy/intrinsic_reward_mean" in metrics
