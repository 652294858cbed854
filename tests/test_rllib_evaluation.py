"""Evaluation as in RLlib (issue 19 item 4): explore follows RLlib's default, the duration in
episodes or env steps, a time limit that cuts an episode that never ends (instead of replacing
the evaluation runner forever), evaluation parallel to training, a custom evaluation function."""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from lightning.pytorch.callbacks import Callback

from lightning_rl import AlgorithmConfig, PPOConfig
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.envs.classes import MultiAgentCartPole
from lightning_rl.errors import CheckpointError, ConfigError
from lightning_rl.training_run import TrainingRun

CUSTOM_EVAL_PATH = "tests.test_rllib_evaluation:three_greedy_episodes"


class EndlessEnv(gym.Env):
    """No action ever ends an episode (RLlib's custom_evaluation corridor under a greedy policy
    that walks into the wall): evaluation must be cut by its time limit."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, config: dict | None = None) -> None:
        self._obs = np.zeros(2, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs, {}

    def step(self, action):
        return self._obs, 0.0, False, False, {}


def three_greedy_episodes(algorithm, eval_env_runner_group):
    """RLlib's custom_evaluation_function signature: (algorithm, eval EnvRunner group) ->
    (metrics, env_steps, agent_steps). The group already holds the current weights."""
    runners = eval_env_runner_group.foreach_env_runner(lambda runner: runner.worker_index)
    results = eval_env_runner_group.evaluate(3, explore=False)
    returns = [x for r in results for x in r.stats.returns]
    steps = sum(r.stats.num_env_steps for r in results)
    metrics = {
        "greedy_return_mean": float(np.mean(returns)),
        "corridor": {"episodes": len(returns), "runners": len(runners)},
    }
    return metrics, steps, steps


def small_config(tmp_path, env="CartPole-v1") -> PPOConfig:
    return (
        PPOConfig()
        .environment(env)
        .env_runners(num_env_runners=0)
        .training(train_batch_size=64, minibatch_size=64, num_epochs=1)
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .trainer(default_root_dir=str(tmp_path), logger=False)
    )


# -- explore ---------------------------------------------------------------------------------------
def test_evaluation_explores_as_in_rllib_unless_evaluation_config_says_otherwise():
    # RLlib: evaluation_config inherits the training config's explore=True.
    assert PPOConfig().evaluation_explore is True
    assert PPOConfig().evaluation(evaluation_interval=2).evaluation_explore is True
    greedy = PPOConfig().evaluation(evaluation_config={"explore": False})
    assert greedy.evaluation_explore is False
    overrides = AlgorithmConfig.overrides(explore=False, metrics_num_episodes_for_smoothing=5)
    assert PPOConfig().evaluation(evaluation_config=overrides).evaluation_explore is False
    with pytest.raises(ConfigError, match="evaluation_config supports"):
        PPOConfig().evaluation(evaluation_config={"lr": 1e-3})
    # The Lightning-native constructor keeps its greedy evaluation (and says so).
    assert PPOConfig(defaults="native").evaluation_explore is False
    # As in RLlib, evaluation settings alone do not turn periodic evaluation on.
    assert PPOConfig().evaluation(evaluation_num_env_runners=1).evaluation_interval is None


# -- a time limit instead of an endless replace loop -----------------------------------------------
@pytest.mark.parametrize("explore", [False, True])
def test_an_episode_that_never_ends_is_cut_at_the_timeout_in_process(tmp_path, caplog, explore):
    algo = (
        small_config(tmp_path, env=EndlessEnv)
        .evaluation(
            evaluation_duration=2,
            evaluation_sample_timeout_s=0.5,
            evaluation_config={"explore": explore},
        )
        .build_algo()
    )
    try:
        with caplog.at_level(logging.WARNING, logger="lightning_rl.data.evaluation"):
            evaluation = algo.evaluate()
        result = algo.train()  # training goes on afterwards
    finally:
        algo.stop()
    assert evaluation["num_episodes_cut"] == 2  # one running episode per env copy
    assert "episode_return_mean" not in evaluation
    assert "evaluation_sample_timeout_s=0.5" in caplog.text
    assert result["training_iteration"] == 1


def test_a_remote_evaluation_runner_that_never_ends_an_episode_is_not_replaced(tmp_path, ray_session):
    calls = []  # RLlib's on_evaluate_* hooks fire for the periodic evaluation on the Ray runner
    algo = (
        small_config(tmp_path, env=EndlessEnv)
        .evaluation(
            evaluation_interval=1,
            evaluation_num_env_runners=1,
            evaluation_duration=1,
            evaluation_sample_timeout_s=1.0,
        )
        .fault_tolerance(sample_timeout_s=0.5)  # shorter than evaluation's own limit
        .callbacks(
            on_evaluate_start=lambda **kwargs: calls.append("start"),
            on_evaluate_end=lambda *, evaluation_metrics, **kwargs: calls.append(
                evaluation_metrics["num_episodes_cut"]
            ),
        )
        .build_algo()
    )
    try:
        result = algo.train()
        eval_group = algo.datamodule.eval_group
        restarts, late = eval_group.num_restarts, eval_group.num_late_results_dropped
        # RLlib's foreach_env_runner reaches the actor (what a custom evaluation function uses),
        # with RLlib's worker_index (1..N) and kwargs.
        indices = eval_group.foreach_env_runner(
            lambda runner, plus: runner.worker_index + plus, kwargs={"plus": 0}
        )
        # set_state loads the weights into the actor (a custom evaluation samples without them),
        # and RLlib's sample() there returns the running episode's chunk.
        state = {**algo.algorithm.policy_state(), "version": 12345}
        eval_group.set_state(state)
        ((episodes, metrics, version),) = eval_group.foreach_env_runner(
            lambda runner: (runner.sample(num_timesteps=4), runner.get_metrics(), runner.weights_version)
        )
    finally:
        algo.stop()
    assert result["evaluation"]["num_episodes_cut"] == 1
    assert restarts == 0 and late == 0
    assert indices == [1]
    assert calls == ["start", 1.0]
    assert version == 12345
    assert [(e.env_steps(), e.agent_steps(), e.is_done) for e in episodes] == [(4, 4, False)]
    assert metrics["num_env_steps_sampled"].peek() == 4 and "episode_return_mean" not in metrics


def test_the_evaluation_timeout_is_checked_at_the_door():
    with pytest.raises(ConfigError, match="evaluation_sample_timeout_s"):
        PPO("CartPole-v1", evaluation_sample_timeout_s=0)
    with pytest.raises(ConfigError, match="evaluation_duration_unit"):
        PPO("CartPole-v1", evaluation_duration_unit="hours")
    with pytest.raises(ConfigError, match="auto"):
        PPOConfig().evaluation(evaluation_duration="auto")


# -- duration unit ---------------------------------------------------------------------------------
def test_evaluation_duration_in_timesteps(tmp_path):
    algo = (
        small_config(tmp_path)
        .evaluation(evaluation_duration=120, evaluation_duration_unit="timesteps")
        .debugging(seed=3)
        .build_algo()
    )
    try:
        evaluation = algo.evaluate()
    finally:
        algo.stop()
    assert evaluation["num_env_steps"] == 120  # exactly the steps asked for, one env copy
    # An untrained CartPole policy ends episodes within ~10-60 steps: several finished.
    assert evaluation["num_episodes"] >= 2
    assert evaluation["episode_len_mean"] * evaluation["num_episodes"] <= 120


def test_multi_agent_evaluation_in_timesteps(tmp_path):
    algo = (
        small_config(tmp_path, env=MultiAgentCartPole)
        .environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .evaluation(evaluation_duration=150, evaluation_duration_unit="timesteps")
        .debugging(seed=1)
        .build_algo()
    )
    try:
        evaluation = algo.evaluate()
    finally:
        algo.stop()
    assert evaluation["num_env_steps"] == 150
    assert evaluation["num_episodes"] >= 1 and evaluation["num_episodes_cut"] == 0


# -- custom evaluation function --------------------------------------------------------------------
def test_custom_evaluation_function_replaces_evaluation_and_its_metrics_reach_the_result(tmp_path):
    algo = (
        small_config(tmp_path)
        .evaluation(evaluation_interval=1, custom_evaluation_function=three_greedy_episodes)
        .build_algo()
    )
    try:
        result = algo.train()
        evaluation = algo.evaluate()
        path = algo.save(tmp_path / "custom_eval.ckpt")
    finally:
        algo.stop()
    for metrics in (result["evaluation"], evaluation):
        assert metrics["greedy_return_mean"] > 0
        assert metrics["corridor"]["episodes"] == 3 and metrics["corridor"]["runners"] == 1
        assert metrics["num_env_steps"] > 0
        assert "episode_return_mean" not in metrics  # the built-in evaluation did not run
    # The checkpoint keeps the import path; loading resolves it only when trusted.
    with pytest.raises(CheckpointError, match="custom_evaluation_function"):
        TrainingRun.from_checkpoint(path)
    restored = TrainingRun.from_checkpoint(path, trusted_classes=[CUSTOM_EVAL_PATH])
    try:
        assert restored.algorithm.custom_evaluation_function is three_greedy_episodes
    finally:
        restored.stop()


def test_custom_evaluation_function_given_as_an_import_path_or_wrong(tmp_path):
    config = small_config(tmp_path).evaluation(custom_evaluation_function=CUSTOM_EVAL_PATH)
    assert config.build_algorithm().hparams.custom_evaluation_function == CUSTOM_EVAL_PATH
    with pytest.raises(ConfigError, match="custom_evaluation_function"):
        PPOConfig().evaluation(custom_evaluation_function=42)
    with pytest.raises(ConfigError, match="Cannot import custom_evaluation_function"):
        PPOConfig().evaluation(custom_evaluation_function="tests.test_rllib_evaluation:missing")


def test_a_custom_evaluation_function_returning_no_metrics_dict_is_one_clear_error(tmp_path):
    algo = (
        small_config(tmp_path)
        .evaluation(custom_evaluation_function=lambda algorithm, group: [1.0, 2.0])
        .build_algo()
    )
    try:
        with pytest.raises(ConfigError, match=r"must return a dict of metrics, got \[1\.0, 2\.0\]"):
            algo.evaluate()
    finally:
        algo.stop()


# -- evaluation parallel to training ---------------------------------------------------------------
class RecordsPendingEvaluation(Callback):
    """Whether an evaluation was running while the iteration's first minibatch trained."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.seen.append(pl_module.experience._pending_evaluation is not None)


def test_evaluation_parallel_to_training_overlaps_the_iteration(tmp_path, ray_session):
    probe = RecordsPendingEvaluation()
    algo = (
        small_config(tmp_path)
        .evaluation(
            evaluation_interval=2,
            evaluation_num_env_runners=1,
            evaluation_duration=2,
            evaluation_parallel_to_training=True,
        )
        .trainer(callbacks=[probe])
        .build_algo()
    )
    try:
        first, second = algo.train(), algo.train()
    finally:
        algo.stop()
    assert probe.seen == [False, True]  # started with iteration 2, the one that evaluates
    assert "evaluation" not in first
    assert second["evaluation"]["num_episodes"] == 2


def test_parallel_evaluation_without_evaluation_actors_runs_after_the_iteration(tmp_path):
    probe = RecordsPendingEvaluation()
    algo = (
        small_config(tmp_path)
        .evaluation(evaluation_interval=1, evaluation_duration=2, evaluation_parallel_to_training=True)
        .trainer(callbacks=[probe])
        .build_algo()
    )
    try:
        result = algo.train()
    finally:
        algo.stop()
    assert probe.seen == [False]
    assert result["evaluation"]["num_episodes"] == 2
