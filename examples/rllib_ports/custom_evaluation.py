"""Port of RLlib's ``examples/evaluation/custom_evaluation.py``: a custom evaluation function.

PPO trains on a corridor of length 10; the custom evaluation function sets the two evaluation
EnvRunners' corridors to 20 and 30 cells, runs three rounds of sampling on them and reduces
their metrics into the evaluation results. RLlib's target:
``evaluation/env_runners/episode_return_mean`` 0.7 within 50 iterations / 50k env steps.
Changed: imports, RLlib's script helpers replaced by a plain loop (``_loop.py``).

    python examples/rllib_ports/custom_evaluation.py [--no-custom-eval]
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from _loop import example_args, train_until
from gymnasium.spaces import Box, Discrete

from lightning_rl import AlgorithmConfig, PPOConfig

EVALUATION_RESULTS, ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN = (
    "evaluation",
    "env_runners",
    "episode_return_mean",
)


class SimpleCorridor(gym.Env):
    """Walk right to the end of a corridor whose length can be changed between episodes."""

    def __init__(self, config=None):
        config = config or {}
        self.action_space = Discrete(2)
        self.observation_space = Box(0.0, 999.0, shape=(1,), dtype=np.float32)
        self.set_corridor_length(config.get("corridor_length", 10))
        self._cur_pos = 0

    def set_corridor_length(self, length):
        assert length <= 999, "The maximum `corridor_length` allowed is 999!"
        self.end_pos = length

    def reset(self, *, seed=None, options=None):
        self._cur_pos = 0.0
        return np.array([self._cur_pos], np.float32), {}

    def step(self, action):
        assert action in [0, 1], action
        if action == 0 and self._cur_pos > 0:
            self._cur_pos -= 1.0
        elif action == 1:
            self._cur_pos += 1.0
        terminated = self._cur_pos >= self.end_pos
        reward = 1.0 if terminated else -0.01
        return np.array([self._cur_pos], np.float32), reward, terminated, False, {}


def extra(parser) -> None:
    parser.add_argument("--no-custom-eval", action="store_true")
    parser.add_argument("--evaluation-parallel-to-training", action="store_true")
    parser.add_argument("--corridor-length-training", type=int, default=10)
    parser.add_argument("--corridor-length-eval-worker-1", type=int, default=20)
    parser.add_argument("--corridor-length-eval-worker-2", type=int, default=30)


ARGS = None


def custom_eval_function(algorithm, eval_workers):
    """Different corridor lengths per evaluation EnvRunner, three sampling rounds, merged metrics."""
    args = ARGS
    eval_workers.foreach_env_runner(
        func=lambda worker: (
            env.unwrapped.set_corridor_length(
                args.corridor_length_eval_worker_1
                if worker.worker_index == 1
                else args.corridor_length_eval_worker_2
            )
            for env in worker.env.unwrapped.envs
        )
    )
    env_runner_metrics, sampled_episodes = [], []
    for i in range(3):
        print(f"Training iteration {algorithm.iteration} -> evaluation round {i}")
        episodes_and_metrics = eval_workers.foreach_env_runner(
            func=lambda worker: (worker.sample(), worker.get_metrics()), local_env_runner=False
        )
        sampled_episodes.extend(eps for eps_and_mtrcs in episodes_and_metrics for eps in eps_and_mtrcs[0])
        env_runner_metrics.extend(eps_and_mtrcs[1] for eps_and_mtrcs in episodes_and_metrics)
    algorithm.metrics.merge_and_log_n_dicts(env_runner_metrics, key=(EVALUATION_RESULTS, ENV_RUNNER_RESULTS))
    eval_results = algorithm.metrics.reduce(key=(EVALUATION_RESULTS, ENV_RUNNER_RESULTS))
    env_steps = sum(eps.env_steps() for eps in sampled_episodes)
    agent_steps = sum(eps.agent_steps() for eps in sampled_episodes)
    return eval_results, env_steps, agent_steps


def main(argv=None) -> dict:
    global ARGS
    args = ARGS = example_args(
        default_iters=50, default_reward=0.7, default_timesteps=50000, argv=argv, extra=extra
    )
    base_config = (
        PPOConfig()
        .environment(SimpleCorridor, env_config={"corridor_length": args.corridor_length_training})
        .evaluation(
            custom_evaluation_function=None if args.no_custom_eval else custom_eval_function,
            evaluation_num_env_runners=2,
            evaluation_interval=1,
            evaluation_duration="auto" if args.evaluation_parallel_to_training else 10,
            evaluation_parallel_to_training=args.evaluation_parallel_to_training,
            evaluation_config=AlgorithmConfig.overrides(
                env_config={"corridor_length": args.corridor_length_training * 2},
                metrics_num_episodes_for_smoothing=5,
            ),
        )
    )
    reward_key = (EVALUATION_RESULTS, ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN)
    return train_until(base_config, "custom_evaluation", args, reward_key=reward_key)


if __name__ == "__main__":
    main()
