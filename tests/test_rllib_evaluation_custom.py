"""RLlib's custom evaluation function written as RLlib writes it (issue 19): the evaluation
EnvRunners' ``sample()`` returns episodes, ``get_metrics()`` their metrics, and
``algorithm.metrics`` (RLlib's MetricsLogger) merges and reduces them into the evaluation
result and Lightning's loggers; ``on_evaluate_start``/``on_evaluate_end`` fire for the periodic
evaluation inside ``train()`` too (on Ray evaluation runners: tests/test_rllib_evaluation.py,
and the port examples/rllib_ports/custom_evaluation.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from lightning_rl import PPOConfig, RLlibCallback
from lightning_rl.env_runners.metrics_logger import MetricsLogger
from lightning_rl.errors import ConfigError
from tests.test_rllib_callbacks import MetricsRecorder
from tests.test_rllib_evaluation import EndlessEnv

EVAL_CORRIDOR = 4
CALLS: list[str] = []
EPISODES: list[tuple[int, float, int, float]] = []  # (worker_index, return, length, final position)
WEIGHTS_VERSIONS: list[int] = []  # the evaluation runners' policy weights when they sampled


class Corridor(gym.Env):
    """RLlib's SimpleCorridor: walk right to the end; the length can change between episodes."""

    observation_space = spaces.Box(0.0, 999.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, config: dict | None = None) -> None:
        self.end_pos = (config or {}).get("corridor_length", 2)
        self.pos = 0.0

    def set_corridor_length(self, length: int) -> None:
        self.end_pos = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0.0
        return np.array([self.pos], np.float32), {}

    def step(self, action):
        self.pos = max(0.0, self.pos + (1.0 if action == 1 else -1.0))
        done = self.pos >= self.end_pos
        return np.array([self.pos], np.float32), 1.0 if done else -0.01, done, False, {}


def rllib_custom_eval(algorithm, eval_workers):
    """RLlib's examples/evaluation/custom_evaluation.py function, as RLlib writes it."""
    eval_workers.foreach_env_runner(
        func=lambda worker: (
            env.unwrapped.set_corridor_length(EVAL_CORRIDOR) for env in worker.env.unwrapped.envs
        )
    )
    env_runner_metrics, sampled_episodes = [], []
    for _ in range(2):
        episodes_and_metrics = eval_workers.foreach_env_runner(
            func=lambda worker: (
                worker.sample(),
                worker.get_metrics(),
                worker.worker_index,
                worker.weights_version,
            ),
            local_env_runner=False,
        )
        for episodes, metrics, index, version in episodes_and_metrics:
            WEIGHTS_VERSIONS.append(version)
            sampled_episodes.extend(episodes)
            env_runner_metrics.append(metrics)
            EPISODES.extend(
                (index, e.get_return(), e.get_length(), float(e.get_observations(-1)[0])) for e in episodes
            )
    algorithm.metrics.merge_and_log_n_dicts(env_runner_metrics, key=("evaluation", "env_runners"))
    eval_results = algorithm.metrics.reduce(key=("evaluation", "env_runners"))
    algorithm.metrics.log_value("custom_eval_calls", 1, reduce="sum")  # outside "evaluation"
    env_steps = sum(e.env_steps() for e in sampled_episodes)
    agent_steps = sum(e.agent_steps() for e in sampled_episodes)
    return eval_results, env_steps, agent_steps


class EvaluateHooks(RLlibCallback):
    def on_evaluate_start(self, *, algorithm, metrics_logger, **kwargs):
        CALLS.append("start")

    def on_evaluate_end(self, *, algorithm, metrics_logger, evaluation_metrics, **kwargs):
        CALLS.append(f"end:{evaluation_metrics['env_runners']['num_episodes']:g}")
        metrics_logger.log_value(("evaluation", "hook_seen"), 1.0)


def corridor_config(tmp_path, eval_runners: int, logger=False) -> PPOConfig:
    return (
        PPOConfig()
        .environment(Corridor, env_config={"corridor_length": 2})
        .env_runners(num_env_runners=0)
        .training(train_batch_size=64, minibatch_size=64, num_epochs=1)
        .rl_module(model_config={"fcnet_hiddens": [8]})
        .evaluation(
            evaluation_interval=1,
            evaluation_num_env_runners=eval_runners,
            evaluation_duration=2 * max(1, eval_runners),  # 2 env copies per evaluation runner
            evaluation_sample_timeout_s=20.0,
            custom_evaluation_function=rllib_custom_eval,
        )
        .callbacks(EvaluateHooks)
        .debugging(seed=0)
        .trainer(default_root_dir=str(tmp_path), logger=logger)
    )


def check_evaluation(result: dict, runners: int) -> None:
    evaluation = result["evaluation"]
    episodes = list(EPISODES)
    assert len(episodes) == 2 * 2 * max(1, runners)  # 2 rounds x 2 env copies x runners
    assert {index for index, *_ in episodes} == ({0} if runners == 0 else set(range(1, runners + 1)))
    # The generator lambda ran on every env copy: every episode walked the longer corridor.
    assert all(length >= EVAL_CORRIDOR and final == EVAL_CORRIDOR for _, _, length, final in episodes)
    returns = [ret for _, ret, _, _ in episodes]
    # The merged, reduced runner metrics are the evaluation's result under RLlib's keys.
    assert evaluation["env_runners"]["episode_return_mean"] == pytest.approx(np.mean(returns))
    assert evaluation["episode_return_mean"] == pytest.approx(np.mean(returns))
    assert evaluation["env_runners"]["episode_return_max"] == pytest.approx(max(returns))
    assert evaluation["num_episodes"] == len(episodes)
    assert evaluation["num_env_steps"] == sum(length for _, _, length, _ in episodes)
    assert result["custom_eval_calls"] == 1  # logged outside "evaluation": the result's top level
    assert evaluation["hook_seen"] == 1.0  # logged by on_evaluate_end
    assert ["start", f"end:{len(episodes)}"] == CALLS  # periodic evaluation inside train()
    assert -1 not in WEIGHTS_VERSIONS  # the runners sampled with the learner's weights


def test_rllib_custom_evaluation_and_evaluate_hooks_in_process(tmp_path):
    CALLS.clear()
    EPISODES.clear()
    WEIGHTS_VERSIONS.clear()
    recorder = MetricsRecorder()
    algo = corridor_config(tmp_path, eval_runners=0, logger=recorder).build_algo()
    try:
        result = algo.train()
    finally:
        algo.stop()
    check_evaluation(result, runners=0)
    rows = {k: v for row in recorder.rows for k, v in row.items()}
    logged_mean = rows["evaluation/episode_return_mean"]
    assert logged_mean == pytest.approx(result["evaluation"]["episode_return_mean"])
    assert rows["custom_eval_calls"] == 1 and rows["evaluation/hook_seen"] == 1.0


def test_an_endless_episode_is_cut_in_a_custom_evaluation(tmp_path):
    def sample_once(algorithm, eval_workers):
        (episodes, metrics), *_ = eval_workers.foreach_env_runner(lambda w: (w.sample(), w.get_metrics()))
        algorithm.metrics.merge_and_log_n_dicts([metrics], key=("evaluation", "env_runners"))
        assert episodes == []  # nothing finished: the running episode was cut
        return algorithm.metrics.reduce(key=("evaluation", "env_runners")), 1, 1

    algo = (
        PPOConfig()
        .environment(EndlessEnv)
        .env_runners(num_env_runners=0)
        .training(train_batch_size=64, minibatch_size=64, num_epochs=1)
        .evaluation(
            evaluation_duration=1, evaluation_sample_timeout_s=0.3, custom_evaluation_function=sample_once
        )
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        evaluation = algo.evaluate()
    finally:
        algo.stop()
    assert evaluation["num_episodes_cut"] == 1 and evaluation["num_episodes"] == 0
    assert "episode_return_mean" not in evaluation


def test_metrics_logger_merges_reduces_and_reports_as_rllib_does():
    runner_a, runner_b, algo_metrics = MetricsLogger(), MetricsLogger(), MetricsLogger()
    for value in (1.0, 2.0):
        runner_a.log_value("ret", value, window=3)
        runner_a.log_value("steps", 10, reduce="sum", clear_on_reduce=True)
    runner_b.log_value("ret", 6.0, window=3)
    runner_b.log_value("steps", 5, reduce="sum", clear_on_reduce=True)
    runner_b.log_value(("nested", "best"), 4.0, reduce="max")
    algo_metrics.merge_and_log_n_dicts([runner_a.pop(), runner_b.pop()], key=("evaluation", "env_runners"))
    assert algo_metrics.peek(("evaluation", "env_runners", "ret")) == 3.0  # window of 3 over both
    reduced = algo_metrics.reduce(key=("evaluation", "env_runners"))
    assert reduced == {"ret": 3.0, "steps": 25.0, "nested": {"best": 4.0}}
    assert algo_metrics.reduce(key="evaluation/env_runners/steps") == 25.0  # cleared: last value stays
    # The framework's report: what was touched since the last report, once.
    assert algo_metrics.report("evaluation")["env_runners"]["steps"] == 25.0
    assert algo_metrics.report("evaluation") == {}
    algo_metrics.log_dict({"a": 1.0, "b": {"c": 2.0}}, key="top", reduce="sum")
    algo_metrics.log_dict({"a": 1.0}, key="top", reduce="sum")
    assert algo_metrics.report() == {"top": {"a": 2.0, "b": {"c": 2.0}}}
    with pytest.raises(ConfigError, match="merge_and_log_n_dicts takes dicts"):
        algo_metrics.merge_and_log_n_dicts([3.0])
    with pytest.raises(ConfigError, match="must be a number"):
        algo_metrics.log_value("x", "high")
