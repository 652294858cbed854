"""Fault tolerance of Ray EnvRunners: crashing and stalling envs, killed actors, limits.

Env copies that raise are rebuilt inside their runner (``restart_failed_sub_environments``,
on by default; see tests/security/test_flaky_envs.py); the tests of actor replacement turn
that off where they need an env exception to fail the whole runner.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
from lightning_rl.env_runners import EnvRunnerFailure
from lightning_rl.envs.classes import CrashingEnv
from lightning_rl.training_run import TrainingRun
from tests.ray_helpers import actor_dies_within

# RL-Zoo-shaped CartPole PPO (256-step batches; the README job's settings until its config moved
# to 512-step batches): seed 0 reaches 450 at 8,960 env steps here with 11 env copies rebuilt;
# the zoo's 10 epochs at lr 1e-3 took 55,040.
PPO_CARTPOLE = dict(
    num_env_runners=2,
    num_envs_per_env_runner=4,
    train_batch_size=256,
    minibatch_size=256,
    num_epochs=20,
    lr=1.25e-3,
    lr_schedule=[[0, 1.25e-3], [100_000, 0.0]],
    clip_param_schedule=[[0, 0.2], [100_000, 0.0]],
    gamma=0.98,
    lambda_=0.8,
    evaluation_duration=20,
    # Evaluation runs on the healthy env: only training runners are under fire.
    evaluation_env_config={"p_crash": 0.0, "p_stall_reset": 0.0, "p_crash_reset": 0.0},
    seed=0,
)


def train(algo, tmp_path, max_epochs=400, callbacks=(), threshold=450.0):
    stop = StopOnReturn(threshold)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        check_val_every_n_epoch=5,
        callbacks=[stop, StopOnEnvSteps(150_000), *callbacks],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(algo)
    return stop, trainer


@pytest.mark.learning
def test_ppo_learns_cartpole_while_the_env_crashes_in_0_2_percent_of_steps(ray_session, tmp_path):
    pl.seed_everything(0, verbose=False)
    algo = PPO(CrashingEnv, {"p_crash": 0.002}, sample_timeout_s=30.0, **PPO_CARTPOLE)
    stop, trainer = train(algo, tmp_path)
    assert stop.reached_at is not None, trainer.callback_metrics
    assert trainer.callback_metrics["env_runners/num_env_restarts"] > 0, "crashed env copies were rebuilt"
    assert trainer.callback_metrics["env_runners/num_env_runner_restarts"] == 0, (
        "a crashing env copy no longer costs its runner's whole sample and actor"
    )


@pytest.mark.learning
def test_ppo_learns_cartpole_while_the_env_hangs_in_3_percent_of_resets(ray_session, tmp_path):
    # The run must see hangs: with 1% of resets, one machine's run reached the target after 160
    # episodes with none (the CPU's float rounding changes the run). With 3%: 2 runners replaced
    # by 113 episodes (6,400 env steps) there; 2% replaced 4 by 212, 5% 5 by 127.
    pl.seed_everything(0, verbose=False)
    algo = PPO(CrashingEnv, {"p_stall_reset": 0.03}, sample_timeout_s=3.0, **PPO_CARTPOLE)
    stop, trainer = train(algo, tmp_path)
    assert stop.reached_at is not None, trainer.callback_metrics
    assert trainer.callback_metrics["env_runners/num_env_runner_restarts"] > 0, (
        "stalled runners were replaced"
    )


class KillRunner(pl.Callback):
    """Kills EnvRunner actor 0 (its process) after a given iteration."""

    def __init__(self, at_epoch: int) -> None:
        self.at_epoch = at_epoch
        self.killed = False

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == self.at_epoch:
            import ray

            ray.kill(module.experience.train_group.actors()[0], no_restart=True)
            self.killed = True


def test_killing_a_runner_actor_mid_run_is_survived(ray_session, tmp_path):
    import time

    import ray

    run = TrainingRun(
        PPO("CartPole-v1", num_env_runners=2, train_batch_size=128, minibatch_size=128, num_epochs=1),
        {"default_root_dir": str(tmp_path), "limit_val_batches": 0},
    )
    for _ in range(2):
        run.train()
    killed = run.datamodule.train_group.actors()[0]
    ray.kill(killed, no_restart=True)
    assert actor_dies_within(killed, seconds=30)  # ray.kill returns before the actor is gone
    result = run.train()  # the iteration completes with the other runner's samples
    assert result["env_runners"]["num_env_runner_restarts"] == 1
    assert result["num_env_steps_sampled_lifetime"] >= 2 * 128 + 64
    deadline = time.monotonic() + 120
    while result["env_runners"]["num_healthy_env_runners"] < 2 and time.monotonic() < deadline:
        result = run.train()
    assert result["env_runners"]["num_healthy_env_runners"] == 2, "the replacement joined again"
    assert result["env_runners"]["num_env_runner_restarts"] == 1
    run.stop()


def test_with_restarts_disabled_the_error_surfaces(ray_session, tmp_path):
    algo = PPO(
        CrashingEnv,
        {"p_crash": 0.5},
        num_env_runners=2,
        train_batch_size=64,
        minibatch_size=64,
        restart_failed_env_runners=False,
        restart_failed_sub_environments=False,
    )
    trainer = pl.Trainer(
        max_epochs=3, limit_val_batches=0, default_root_dir=tmp_path, logger=False, enable_progress_bar=False
    )
    with pytest.raises(EnvRunnerFailure, match=r"simulated crash in step.*restart_failed_env_runners is off"):
        trainer.fit(algo)


def test_ignoring_failures_keeps_training_on_the_remaining_runners(ray_session, tmp_path):
    algo = PPO(
        CrashingEnv,
        {"p_crash": 0.0},
        num_env_runners=2,
        train_batch_size=64,
        minibatch_size=64,
        restart_failed_env_runners=False,
        ignore_env_runner_failures=True,
    )
    kill = KillRunner(at_epoch=0)
    trainer = pl.Trainer(
        max_epochs=3,
        limit_val_batches=0,
        callbacks=[kill],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
    )
    trainer.fit(algo)
    assert trainer.callback_metrics["env_runners/num_healthy_env_runners"] == 1


def test_an_env_that_always_crashes_on_reset_is_given_up_on(ray_session, tmp_path):
    algo = PPO(
        CrashingEnv,
        {"p_crash_reset": 1.0},
        num_env_runners=2,
        train_batch_size=64,
        minibatch_size=64,
        max_consecutive_env_runner_failures=3,
    )
    trainer = pl.Trainer(
        max_epochs=2, limit_val_batches=0, default_root_dir=tmp_path, logger=False, enable_progress_bar=False
    )
    with pytest.raises(
        EnvRunnerFailure,
        match=r"failed 3 times in a row without one successful call.*simulated crash in reset",
    ):
        trainer.fit(algo)


def test_the_restart_limit_is_enforced(ray_session, tmp_path):
    algo = PPO(
        CrashingEnv,
        {"p_crash": 0.05},
        num_env_runners=2,
        train_batch_size=256,
        minibatch_size=256,
        max_num_env_runner_restarts=2,
        restart_failed_sub_environments=False,
    )
    trainer = pl.Trainer(
        max_epochs=50, limit_val_batches=0, default_root_dir=tmp_path, logger=False, enable_progress_bar=False
    )
    with pytest.raises(EnvRunnerFailure, match=r"limit of 2 restarts"):
        trainer.fit(algo)
