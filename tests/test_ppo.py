"""PPO: learning (by return thresholds within env-step budgets) and Lightning integration."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl.algorithms.kl_penalty import adapt_kl_coeff, k3_kl
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.algorithms.ppo.loss import clipped_surrogate, log_clip_bounds
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
from lightning_rl.data import OnPolicyDataModule
from lightning_rl.errors import ConfigError
from tests.envs import TargetEnv

CARTPOLE = dict(
    num_envs_per_env_runner=8,
    rollout_fragment_length=32,
    train_batch_size=256,
    minibatch_size=256,
    num_epochs=20,
    lr=1e-3,
    gamma=0.98,
    lambda_=0.8,
    evaluation_duration=20,
)


def fit(algo, quiet_trainer_kwargs, max_epochs, callbacks=(), **trainer_kwargs):
    kwargs = {
        **quiet_trainer_kwargs,
        "max_epochs": max_epochs,
        "callbacks": list(callbacks),
        **trainer_kwargs,
    }
    trainer = pl.Trainer(**kwargs)
    trainer.fit(algo)
    return trainer


@pytest.mark.learning
def test_ppo_learns_cartpole_to_475_within_100k_steps(quiet_trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    algo = PPO("CartPole-v1", num_env_runners=0, seed=0, **CARTPOLE)
    stop = StopOnReturn(475)
    trainer = fit(algo, quiet_trainer_kwargs, 400, [stop, StopOnEnvSteps(100_000)], check_val_every_n_epoch=4)
    assert stop.reached_at is not None, f"evaluation return only {trainer.callback_metrics}"
    assert algo.num_env_steps_sampled_lifetime <= 100_000
    assert float(trainer.callback_metrics["evaluation/episode_return_mean"]) >= 475


@pytest.mark.learning
def test_ppo_learns_continuous_actions_through_the_unsquash_connector(quiet_trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    algo = PPO(
        TargetEnv,
        num_envs_per_env_runner=16,
        rollout_fragment_length=16,
        train_batch_size=256,
        minibatch_size=64,
        num_epochs=4,
        lr=3e-3,
        evaluation_duration=100,
        seed=0,
        model_config={"fcnet_hiddens": [32]},
    )
    assert [s["name"] for s in algo.module_to_env_specs["default_policy"]] == ["UnsquashActions"]
    stop = StopOnReturn(-0.05)
    fit(algo, quiet_trainer_kwargs, 80, [stop], check_val_every_n_epoch=4)
    assert stop.reached_at is not None, "PPO did not learn a = 2 * target within 20k env steps"


def test_explicit_datamodule_overrides_the_algorithms_runner_settings(quiet_trainer_kwargs):
    algo = PPO("CartPole-v1", num_envs_per_env_runner=1, train_batch_size=64, minibatch_size=32, num_epochs=1)
    datamodule = OnPolicyDataModule(num_envs_per_env_runner=4)
    trainer = pl.Trainer(**{**quiet_trainer_kwargs, "max_epochs": 2, "limit_val_batches": 0})
    trainer.fit(algo, datamodule=datamodule)
    assert datamodule.num_env_steps_sampled_lifetime == 2 * 64
    assert algo.experience is datamodule


def test_shared_trunk_kl_loss_and_the_entropy_lr_and_clip_schedules(quiet_trainer_kwargs):
    algo = PPO(
        "CartPole-v1",
        train_batch_size=128,
        minibatch_size=64,
        num_epochs=2,
        use_kl_loss=True,
        kl_coeff=0.2,
        kl_target=1e-12,  # any real update overshoots: the mean KL here ranges over 1e-4..8e-8
        entropy_coeff_schedule=[[0, 0.1], [256, 0.0]],
        lr_schedule=[[0, 1e-3], [256, 1e-4]],
        clip_param_schedule=[[0, 0.3], [256, 0.1]],
        model_config={"vf_share_layers": True},
        seed=0,
    )
    assert algo.module.value_net.encoder is algo.module.policy_net.encoder
    trainer = fit(algo, quiet_trainer_kwargs, 3, limit_val_batches=0)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["learners/default_policy/total_loss"])
    assert float(algo.module.kl_coeff) == pytest.approx(0.2 * 1.5**3), "each overshoot raises it 1.5x"
    assert float(algo.module.entropy_coeff) == pytest.approx(0.0)  # schedule ended at 256 steps
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)
    assert algo.module.loss_config.clip_param == pytest.approx(0.1)  # set at 256 env steps


def test_a_clip_range_of_one_or_more_leaves_the_ratio_without_a_lower_bound():
    advantage = torch.tensor([[1.0], [-1.0]])
    log_ratio = torch.log(torch.tensor([0.01, 0.01]))
    # RLlib clamps the ratio to [1 - eps, 1 + eps]: eps = 1.5 keeps a ratio of 0.01 as it is.
    loss = clipped_surrogate(log_ratio, advantage, clip_param=1.5)
    assert torch.allclose(loss, torch.tensor([[-0.01], [0.01]]))
    # With eps = 0.2 the negative advantage's ratio is clipped up to 0.8: the pessimistic term.
    assert torch.allclose(clipped_surrogate(log_ratio, advantage, 0.2), torch.tensor([[-0.01], [0.8]]))
    assert log_clip_bounds(1.5)[0] == float("-inf")
    with pytest.raises(ConfigError, match="clip_param_schedule values must be >= 0"):
        PPO("CartPole-v1", clip_param_schedule=[[0, 0.2], [1000, -0.1]])


def test_k3_kl_stays_exact_for_the_tiny_ratios_of_a_gentle_update():
    log_ratio = torch.tensor([1e-4, -1e-4, 3e-5, 0.0])
    expected = (torch.expm1(log_ratio.double()) - log_ratio.double()).float()  # ~r^2/2
    assert torch.allclose(k3_kl(log_ratio), expected, rtol=1e-2, atol=0)
    assert (k3_kl(torch.linspace(-3, 3, 101)) >= 0).all()


@pytest.mark.parametrize(("mean_kl", "expected"), [(3e-2, 0.3), (1e-2, 0.2), (4e-3, 0.1)])
def test_adapt_kl_coeff_follows_rllibs_rule(mean_kl, expected):
    coeff = torch.tensor(0.2)
    adapt_kl_coeff(coeff, mean_kl, kl_target=1e-2)
    assert float(coeff) == pytest.approx(expected)


def test_fast_dev_run_and_limit_train_batches(quiet_trainer_kwargs):
    # One training batch is one iteration (all its minibatch updates run in one step):
    # fast_dev_run runs one iteration, 2 epochs x 4 minibatches = 8 optimizer steps.
    algo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=16, num_epochs=2)
    trainer = pl.Trainer(**{**quiet_trainer_kwargs, "fast_dev_run": True})
    trainer.fit(algo)
    assert trainer.global_step == 8
    algo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=16, num_epochs=2)
    trainer = fit(algo, quiet_trainer_kwargs, 2, limit_train_batches=3, limit_val_batches=0)
    assert trainer.global_step == 2 * 8


def test_weights_reach_the_runners_every_iteration(quiet_trainer_kwargs):
    algo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=1)
    fit(algo, quiet_trainer_kwargs, 3, limit_val_batches=0)
    runner = algo.experience  # the algorithm's own DataModule was closed at teardown
    assert runner.train_group is None
    assert algo.policy_state()["version"] == 3


def test_ray_mode_trains_with_actors_and_evaluation_runners(ray_session, quiet_trainer_kwargs):
    algo = PPO(
        "CartPole-v1",
        num_env_runners=2,
        num_envs_per_env_runner=2,
        train_batch_size=128,
        minibatch_size=64,
        num_epochs=2,
        evaluation_num_env_runners=1,
        evaluation_duration=4,
        seed=1,
    )
    trainer = fit(algo, quiet_trainer_kwargs, 3)
    metrics = trainer.callback_metrics
    assert metrics["num_env_steps_sampled_lifetime"] == 3 * 128
    assert metrics["env_runners/num_healthy_env_runners"] == 2
    assert metrics["evaluation/num_episodes"] == 4


def test_fit_gives_the_callers_torch_thread_count_back(quiet_trainer_kwargs):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        algo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_cpus_per_learner=1)
        fit(algo, quiet_trainer_kwargs, 1, limit_val_batches=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
