"""MuJoCo (the ``mujoco`` extra): Hopper-v5 as the project creates it passes gymnasium's
``check_env``, and SAC and PPO run a few hundred env steps of it through the public API with
finite losses. Learning figures (HalfCheetah-v5 and Hopper-v5 within a stated env-step
budget) live in ``benchmarks/mujoco_learning.py``; this only proves the env family is wired."""

from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import pytest
from gymnasium.utils.env_checker import check_env

import lightning_rl
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.algorithms.sac import SAC

ENV = "Hopper-v5"


def test_hopper_as_created_by_the_project_passes_check_env():
    env = lightning_rl.make_env(ENV)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # style hints (float64 observations) are warnings
            check_env(env.unwrapped, skip_render_check=True)
            check_env(env, skip_render_check=True)
    finally:
        env.close()


def _losses(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if "loss" in k}


@pytest.mark.parametrize(
    ("algo_class", "settings"),
    [
        (
            SAC,
            dict(
                rollout_fragment_length=100,
                train_batch_size=64,
                training_intensity=64,
                num_steps_sampled_before_learning_starts=100,
                model_config={"fcnet_hiddens": [32, 32]},
            ),
        ),
        (
            PPO,
            dict(
                rollout_fragment_length=100,
                train_batch_size=100,
                minibatch_size=50,
                num_epochs=2,
                model_config={"fcnet_hiddens": [32, 32]},
            ),
        ),
    ],
    ids=["SAC", "PPO"],
)
def test_sac_and_ppo_train_on_hopper(algo_class, settings, quiet_trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    algo = algo_class(ENV, num_env_runners=0, num_envs_per_env_runner=1, seed=0, **settings)
    trainer = pl.Trainer(**{**quiet_trainer_kwargs, "max_epochs": 3, "limit_val_batches": 0})
    trainer.fit(algo)
    assert algo.num_env_steps_sampled_lifetime >= 300, "the Hopper steps were sampled"
    assert trainer.global_step > 0, "the learner updated"
    losses = _losses(trainer)
    assert losses, f"no loss was logged: {sorted(trainer.callback_metrics)}"
    assert all(math.isfinite(v) for v in losses.values()), losses
