"""The RLlib-style fluent config: RLlib's quick start, validation, results layout."""

from __future__ import annotations

import logging

import pytest

from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.connectors.env_to_module import FlattenObservations
from lightning_rl.errors import ConfigError, UnknownNameError
from tests.ray_helpers import actor_dies_within


def test_rllib_quick_start_on_taxi_runs_unchanged_but_for_imports(ray_session, tmp_path):
    config = (
        PPOConfig()
        .environment("Taxi-v3")
        .env_runners(num_env_runners=2, env_to_module_connector=lambda env: FlattenObservations())
        .evaluation(evaluation_num_env_runners=1)
        .trainer(default_root_dir=str(tmp_path))
    )
    algo = config.build_algo()
    # RLlib's quick start trains 5 iterations; one of RLlib's (4000 env steps, 30 epochs) is enough
    # to show it runs (each takes ~30 s on 2 shared cores).
    last = algo.train()
    assert last["training_iteration"] == 1
    assert last["env_runners"]["num_env_steps_sampled_lifetime"] == 4000  # RLlib's batch
    assert last["num_env_steps_sampled_lifetime"] == 4000
    assert "episode_return_mean" in last["env_runners"]
    assert {"policy_loss", "vf_loss", "total_loss"} <= set(last["learners"]["default_policy"])
    # As in RLlib, evaluation(evaluation_num_env_runners=1) alone does not evaluate periodically.
    assert "evaluation" not in last
    evaluation = algo.evaluate()
    assert evaluation["env_runners"]["num_episodes"] == 10
    actors = algo.datamodule.train_group.actors() + algo.datamodule.eval_group.actors()
    assert len(actors) == 3
    algo.stop()
    assert algo.datamodule.train_group is None and algo.datamodule.eval_group is None
    assert all(actor_dies_within(actor, seconds=30) for actor in actors)


def test_unknown_setting_is_one_error_with_the_valid_names():
    with pytest.raises(
        UnknownNameError, match=r"Unknown training\(\) setting for PPO 'lrr'.*Did you mean 'lr'"
    ):
        PPOConfig().training(lrr=1e-3)


def test_framework_and_log_level_are_checked_never_silently_dropped():
    # TensorFlow-only keywords have nothing to act on; "off" torch keywords are accepted.
    PPOConfig().framework("torch", eager_tracing=True, torch_compile_learner=False, torch_ddp_kwargs={})
    with pytest.raises(ConfigError, match=r"torch_compile_learner=True.*no torch.compile path"):
        PPOConfig().framework(torch_compile_learner=True)
    with pytest.raises(ConfigError, match=r"torch_ddp_kwargs.*DDPStrategy"):
        PPOConfig().framework(torch_ddp_kwargs={"find_unused_parameters": True})
    with pytest.raises(UnknownNameError, match=r"framework\(\) setting 'torch_compile_lerner'.*Did you mean"):
        PPOConfig().framework(torch_compile_lerner=True)
    with pytest.raises(ConfigError, match=r"log_level must be one of .*'LOUD'"):
        PPOConfig().debugging(log_level="LOUD")
    logger = logging.getLogger("lightning_rl")
    before = logger.level
    try:
        PPOConfig().environment("CartPole-v1").debugging(log_level="warn").build_algorithm()
        assert logger.level == logging.WARNING
        PPOConfig().environment("CartPole-v1").debugging(log_level="DEBUG").build_algorithm()
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(before)


def test_rllib_aliases_and_attribute_access():
    config = PPOConfig().training(train_batch_size_per_learner=512, sgd_minibatch_size=32, **{"lambda": 0.9})
    assert config.train_batch_size == 512
    assert config.minibatch_size == 32
    assert config.lambda_ == 0.9
    assert config.lr == 5e-5  # RLlib's default (the fluent config starts from RLlib's values)
    assert PPOConfig(defaults="native").lr == 3e-4  # the algorithm's own default
    assert config.to_dict()["train_batch_size"] == 512


def test_evaluation_interval_maps_onto_the_trainer():
    config = PPOConfig().environment("CartPole-v1")
    assert config.build_trainer_kwargs()["limit_val_batches"] == 0
    config.evaluation(evaluation_interval=3, evaluation_duration=7)
    assert config.build_trainer_kwargs()["check_val_every_n_epoch"] == 3
    assert config.evaluation_duration == 7
    config.evaluation(evaluation_duration_unit="timesteps")
    assert config.evaluation_duration_unit == "timesteps"
    with pytest.raises(ConfigError, match="evaluation_duration_unit"):
        config.evaluation(evaluation_duration_unit="hours")


def test_learners_map_to_ddp_devices():
    kwargs = PPOConfig().learners(num_learners=2).build_trainer_kwargs()
    assert kwargs["strategy"] == "ddp" and kwargs["devices"] == 2 and kwargs["accelerator"] == "cpu"


def test_build_algorithm_gives_a_plain_lightning_module():
    algo = PPOConfig().environment("CartPole-v1").training(lr=1e-3).build_algorithm()
    assert isinstance(algo, PPO) and algo.hparams.lr == 1e-3


def test_train_loop_matches_one_fit_and_evaluates_on_the_interval(tmp_path):
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0)
        .training(train_batch_size=64, minibatch_size=32, num_epochs=1)
        .evaluation(evaluation_interval=2, evaluation_duration=2)
        .trainer(default_root_dir=str(tmp_path))
    )
    algo = config.build_algo()
    first, second = algo.train(), algo.train()
    assert "evaluation" not in first and "evaluation" in second
    assert second["num_env_steps_sampled_lifetime"] == 128
    assert algo.trainer.global_step == 4
    algo.stop()
