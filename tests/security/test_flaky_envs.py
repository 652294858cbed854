"""Envs that crash now and then do not end the run (finding 7 of issue 18).

An exception in one env copy rebuilds that copy and drops only its episode; the other copies'
steps of the same fragment are kept (RLlib's ``restart_failed_sub_environments``, on by
default). ``sample_timeout_s`` bounds the in-process runner too: a hanging ``reset`` is
interrupted and that copy rebuilt, instead of hanging the run forever.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
from lightning_rl.env_runners.env_runner import EnvRunner
from lightning_rl.envs.classes import CrashingEnv
from lightning_rl.errors import EnvError

HEALTHY = {"p_crash": 0.0, "p_crash_reset": 0.0, "p_stall_reset": 0.0}
PPO_CARTPOLE = dict(
    num_env_runners=0,
    num_envs_per_env_runner=8,
    rollout_fragment_length=32,
    train_batch_size=256,
    minibatch_size=256,
    num_epochs=20,
    lr=1e-3,
    gamma=0.98,
    lambda_=0.8,
    evaluation_duration=20,
    evaluation_env_config=HEALTHY,  # evaluation measures the policy, not the crashes
    seed=0,
)


def quiet_trainer(tmp_path, max_epochs, callbacks=(), **kwargs):
    return pl.Trainer(
        max_epochs=max_epochs,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        **kwargs,
    )


@pytest.mark.learning
@pytest.mark.parametrize(("p_crash", "env_seed"), [(0.002, 1), (0.01, 8)])
def test_ppo_learns_cartpole_to_450_while_env_copies_crash(tmp_path, p_crash, env_seed):
    pl.seed_everything(0, verbose=False)
    algo = PPO(CrashingEnv, {"p_crash": p_crash, "seed": env_seed}, **PPO_CARTPOLE)
    stop = StopOnReturn(450)
    trainer = quiet_trainer(tmp_path, 400, [stop, StopOnEnvSteps(100_000)], check_val_every_n_epoch=4)
    trainer.fit(algo)
    metrics = trainer.callback_metrics
    assert stop.reached_at is not None, f"evaluation return only {metrics}"
    assert metrics["evaluation/episode_return_mean"] >= 450
    assert metrics["env_runners/num_env_restarts"] > 0, "copies crashed and were rebuilt"
    assert metrics["env_runners/num_env_restarts"] == metrics["env_runners/num_episodes_dropped"]
    print(
        f"p_crash={p_crash}: return >= 450 after {algo.num_env_steps_sampled_lifetime} env steps, "
        f"{int(metrics['env_runners/num_env_restarts'])} env copies rebuilt"
    )


def test_a_crash_keeps_the_other_copies_fragments():
    algo = PPO(CrashingEnv, {"p_crash": 0.05, "seed": 9}, num_envs_per_env_runner=4)
    runner = EnvRunner(algo.env_runner_spec(num_envs=4))
    result = runner.sample(100, True, algo.policy_state())
    assert result.stats.num_env_restarts >= 5, "~20 crashes expected in 400 steps"
    assert result.stats.num_episodes_dropped == result.stats.num_env_restarts
    assert result.stats.num_env_steps == 400
    assert result.data["observation"].shape[:2] == (4, 100)
    for value in (
        result.data["observation"],
        result.data["next"]["observation"],
        result.data["next"]["reward"],
    ):
        assert torch.isfinite(value).all()


def test_without_sub_env_restarts_a_crash_is_an_error_naming_the_env():
    algo = PPO(CrashingEnv, {"p_crash": 0.5, "seed": 10}, restart_failed_sub_environments=False)
    runner = EnvRunner(algo.env_runner_spec(num_envs=2))
    with pytest.raises(
        EnvError, match=r"CrashingEnv' \(copy \d on env runner 0\) raised in step\(\): EnvCrashed.*is off"
    ):
        runner.sample(50, True, algo.policy_state())


def test_an_env_that_always_crashes_on_reset_is_given_up_on():
    algo = PPO(CrashingEnv, {"p_crash_reset": 1.0}, max_consecutive_env_runner_failures=3)
    with pytest.raises(
        EnvError, match=r"failed 4 times in a row without one good step.*simulated crash in reset"
    ):
        EnvRunner(algo.env_runner_spec(num_envs=2)).sample(10, True, algo.policy_state())


def test_a_hanging_reset_in_process_is_bounded_by_sample_timeout_s(tmp_path):
    """Today's in-process runner waited out the whole stall (here 30 s per hung reset)."""
    algo = PPO(
        CrashingEnv,
        {"p_stall_reset": 0.05, "stall_seconds": 30.0, "seed": 11},
        num_envs_per_env_runner=4,
        rollout_fragment_length=64,
        train_batch_size=256,
        minibatch_size=256,
        num_epochs=1,
        sample_timeout_s=0.5,
        evaluation_env_config=HEALTHY,
        seed=0,
    )
    trainer = quiet_trainer(tmp_path, 6, limit_val_batches=0)
    trainer.fit(algo)
    metrics = trainer.callback_metrics
    assert metrics["env_runners/num_env_restarts"] > 0, "hung copies were interrupted and rebuilt"
    assert metrics["num_env_steps_sampled_lifetime"] == 6 * 256


def test_a_reset_that_always_hangs_ends_in_an_error_not_a_hang():
    algo = PPO(
        CrashingEnv,
        {"p_stall_reset": 1.0, "stall_seconds": 30.0},
        sample_timeout_s=0.2,
        max_consecutive_env_runner_failures=2,
    )
    runner = EnvRunner(algo.env_runner_spec(num_envs=1))
    with pytest.raises(EnvError, match=r"failed 3 times in a row.*hung in reset\(\).*sample_timeout_s=0.2"):
        runner.sample(10, True, algo.policy_state())
