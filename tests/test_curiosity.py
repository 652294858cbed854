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
from lightning_rl.errors import ConfigError


def batch_of(next_obs):
    n = next_obs.shape[0]
    return TensorDict({"next": {"observation": next_obs, "reward": torch.zeros(n, 1)}}, batch_size=[n])


def rollout_of(obs, next_obs):
    """A ``[num_envs, T]`` rollout batch with 1-D observations."""
    envs, steps = obs.shape[:2]
    return TensorDict(
        {"observation": obs, "next": {"observation": next_obs, "reward": torch.zeros(envs, steps, 1)}},
        batch_size=[envs, steps],
    )


def test_count_based_bonus_is_rllibs_coeff_over_lifetime_count_of_the_current_observation():
    """RLlib's formula: coeff / n(obs_t), the count taken step by step (this step included), of
    the observation the action was taken in, not of the next one."""
    curiosity = CountBasedCuriosity(intrinsic_reward_coeff=2.0)
    curiosity.setup(spaces.Box(0, 10, (1,)), spaces.Discrete(2))
    obs = torch.tensor([[[1.0], [1.0], [2.0]], [[1.0], [3.0], [1.0]]])  # env copy 0, env copy 1
    next_obs = torch.full_like(obs, 9.0)  # never counted
    out = curiosity(rollout_of(obs, next_obs))
    # Env copy 0's steps in time order, then env copy 1's: cell 1 is seen a 1st, 2nd, 3rd, 4th time.
    expected = torch.tensor([[2 / 1, 2 / 2, 2 / 1], [2 / 3, 2 / 1, 2 / 4]])
    assert torch.allclose(out["next", "intrinsic_reward"][..., 0], expected.to(out["next", "reward"].dtype))
    assert torch.allclose(out["next", "reward"][..., 0], expected)
    restored = CountBasedCuriosity(intrinsic_reward_coeff=2.0)
    restored.set_state(curiosity.get_state())
    again = restored(rollout_of(torch.tensor([[[2.0], [9.0]]]), torch.zeros(1, 2, 1)))
    assert again["next", "intrinsic_reward"][0, :, 0].tolist() == pytest.approx([2 / 2, 2 / 1])


def test_count_based_curiosity_rounds_continuous_observations_only_when_asked():
    exact = CountBasedCuriosity()
    rounded = CountBasedCuriosity(obs_decimals=0)
    obs = torch.tensor([[[0.1], [0.2]]])
    assert exact(rollout_of(obs, obs))["next", "intrinsic_reward"][0, :, 0].tolist() == [1.0, 1.0]
    assert rounded(rollout_of(obs, obs))["next", "intrinsic_reward"][0, :, 0].tolist() == [1.0, 0.5]


def test_count_table_is_bounded_with_an_error_that_names_the_way_out():
    curiosity = CountBasedCuriosity(max_distinct_observations=3)
    obs = torch.tensor([[[0.1], [0.2], [0.1], [0.3]]])
    curiosity(rollout_of(obs, obs))  # 3 distinct: at the bound, fine
    with pytest.raises(ConfigError, match=r"max_distinct_observations=3.*obs_decimals"):
        curiosity(rollout_of(torch.tensor([[[0.4]]]), torch.zeros(1, 1, 1)))
    assert len(curiosity.get_state()["keys"]) == 3
    with pytest.raises(ConfigError, match="max_distinct_observations"):
        CountBasedCuriosity(max_distinct_observations=0)


def test_rnd_never_learns_from_a_non_finite_observation():
    """A NaN row keeps its own NaN bonus (the learner's guard refuses that update), but the
    predictor and the bonus scale learn only from the finite rows and stay usable."""
    torch.manual_seed(0)
    rnd = RND(updates_per_batch=3)
    rnd.setup(spaces.Box(-1, 1, (4,)), spaces.Discrete(2))
    next_obs = torch.rand(8, 4)
    next_obs[3, 1] = float("nan")
    out = rnd(batch_of(next_obs))
    bonus = out["next", "intrinsic_reward"][:, 0]
    assert torch.isnan(bonus[3]) and torch.isfinite(bonus[torch.arange(8) != 3]).all()
    assert all(torch.isfinite(p).all() for p in rnd.predictor.parameters())
    later = rnd(batch_of(torch.rand(8, 4)))["next", "intrinsic_reward"]
    assert torch.isfinite(later).all()
    all_nan = rnd(batch_of(torch.full((2, 4), float("nan"))))  # nothing to learn from: no step
    assert torch.isnan(all_nan["next", "intrinsic_reward"]).all()
    assert all(torch.isfinite(p).all() for p in rnd.predictor.parameters())


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
