"""Bad input gets one clear error naming the bad value and the choices; nothing saved is lost."""

from __future__ import annotations

import hashlib

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.connectors import MeanStdFilter
from lightning_rl.env_runners import EnvRunnerFailure
from lightning_rl.errors import ConfigError, EnvError, SpaceError, UnknownNameError
from tests.envs import FailingEnv


def test_unknown_env_suggests_close_matches():
    with pytest.raises(UnknownNameError, match=r"Unknown env 'CartPole-v9'.*Did you mean 'CartPole-v1'"):
        PPO("CartPole-v9")
    with pytest.raises(UnknownNameError, match=r"Unknown env 'Taxi'.*'Taxi-v3'"):
        PPOConfig().environment("Taxi").build_algorithm()


def test_a_connector_that_does_not_fit_the_observation_space():
    with pytest.raises(
        SpaceError, match=r"MeanStdFilter needs a float Box observation space, got Discrete\(500\)"
    ):
        PPO("Taxi-v3", env_to_module_connector=[MeanStdFilter()])


def test_a_non_box_observation_without_flattening_names_the_fix():
    with pytest.raises(SpaceError, match=r"Discrete\(500\).*FlattenObservations"):
        PPO("Taxi-v3")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, r"lr must be a positive number, got 0.0"),
        ({"lr": -1e-3}, r"lr must be a positive number, got -0.001"),
        ({"train_batch_size": 0}, r"train_batch_size must be a positive integer, got 0"),
        ({"minibatch_size": -5}, r"minibatch_size must be a positive number, got -5"),
        ({"num_epochs": 0}, r"num_epochs must be a positive number, got 0"),
        ({"minibatch_size": 512, "train_batch_size": 256}, r"minibatch_size \(512\) must not exceed"),
        ({"num_envs_per_env_runner": 0}, r"num_envs_per_env_runner must be a positive integer"),
        ({"rollout_fragment_length": 0}, r"rollout_fragment_length must be a positive integer or 'auto'"),
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\], got 1.5"),
        (
            {"model_config": {"fcnet_hidens": [8]}},
            r"Unknown model_config key 'fcnet_hidens'.*'fcnet_hiddens'",
        ),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PPO("CartPole-v1", **kwargs)


@pytest.mark.parametrize("fail_in", ["reset", "step"])
def test_an_env_raising_in_the_local_runner_is_one_clear_error(fail_in, tmp_path):
    algo = PPO(FailingEnv, {"fail_in": fail_in, "fail_after": 3}, train_batch_size=64, minibatch_size=64)
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    with pytest.raises(EnvError, match=rf"raised in {fail_in}\(\).*simulator crashed in {fail_in}"):
        trainer.fit(algo)


def test_an_env_raising_on_every_ray_runner_gives_up_with_the_cause(ray_session, tmp_path):
    algo = PPO(
        FailingEnv,
        {"fail_in": "step"},
        num_env_runners=2,
        train_batch_size=64,
        minibatch_size=64,
        sample_timeout_s=60,
        max_consecutive_env_runner_failures=3,
    )
    trainer = pl.Trainer(
        max_epochs=2, default_root_dir=tmp_path, enable_progress_bar=False, logger=False, limit_val_batches=0
    )
    with pytest.raises(EnvRunnerFailure, match=r"failed 3 times in a row.*simulator crashed in step"):
        trainer.fit(algo)


def test_a_failing_run_leaves_earlier_checkpoints_untouched(tmp_path):
    checkpoint_dir = tmp_path / "checkpoints"
    good = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=1)
    kwargs = {
        "default_root_dir": tmp_path,
        "enable_progress_bar": False,
        "logger": False,
        "limit_val_batches": 0,
    }
    pl.Trainer(max_epochs=1, callbacks=[ModelCheckpoint(dirpath=checkpoint_dir)], **kwargs).fit(good)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoint_dir.iterdir()}
    assert before

    # Without sub-env restarts the crash ends the run (with them, this env would train on).
    broken = PPO(
        FailingEnv,
        {"fail_in": "step", "fail_after": 10},
        train_batch_size=64,
        minibatch_size=64,
        restart_failed_sub_environments=False,
    )
    trainer = pl.Trainer(max_epochs=3, callbacks=[ModelCheckpoint(dirpath=checkpoint_dir)], **kwargs)
    with pytest.raises(EnvError):
        trainer.fit(broken)
    with pytest.raises(ConfigError):
        PPO("CartPole-v1", lr=-1.0)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoint_dir.iterdir()}
    assert after == before
