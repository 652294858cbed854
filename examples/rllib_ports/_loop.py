"""What replaces RLlib's example-script helpers in the ports: a plain ``algo.train()`` loop.

RLlib's ``add_rllib_example_script_args`` gives every example three stop criteria
(``--stop-iters``, ``--stop-timesteps``, ``--stop-reward`` on
``env_runners/episode_return_mean``) and ``run_rllib_example_script_experiment`` trains
until the first of them is met. :func:`example_args` and :func:`train_until` do the same with
a plain loop, and print one JSON line with the figure (iterations, env steps, return, seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

RETURN_KEY = ("env_runners", "episode_return_mean")


def example_args(
    *,
    default_iters: int,
    default_timesteps: int,
    default_reward: float,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """RLlib's stop arguments (same names and defaults as the example's) and the example's own."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--stop-iters", type=int, default=default_iters)
    parser.add_argument("--stop-timesteps", type=int, default=default_timesteps)
    parser.add_argument("--stop-reward", type=float, default=default_reward)
    parser.add_argument("--num-env-runners", type=int, default=None)
    # For quick checks (the smoke test): a smaller batch than the example's, no evaluation.
    parser.add_argument("--train-batch-size", type=int, default=None)
    parser.add_argument("--no-evaluation", action="store_true")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def build_algo(config: Any, args: argparse.Namespace) -> Any:
    """``config.build_algo()`` after the command-line settings RLlib's helper applies too."""
    if args.num_env_runners is not None:
        config.env_runners(num_env_runners=args.num_env_runners)
    if args.train_batch_size is not None:
        size = int(args.train_batch_size)
        config.training(train_batch_size=size, minibatch_size=min(size, int(config.minibatch_size)))
    if args.no_evaluation:
        config.evaluation(evaluation_interval=None)
    return config.build_algo()


def metric(result: dict[str, Any], key: Sequence[str] = RETURN_KEY) -> float:
    value: Any = result
    for part in key:
        if not isinstance(value, dict) or part not in value:
            return float("nan")
        value = value[part]
    return float(value)


def train_until(
    algo_or_config: Any,
    name: str,
    args: argparse.Namespace,
    *,
    reward_key: Sequence[str] = RETURN_KEY,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    stop_algo: bool = True,
) -> dict[str, Any]:
    """``algo.train()`` until RLlib's stop criteria; returns (and prints) the figure."""
    algo = build_algo(algo_or_config, args) if hasattr(algo_or_config, "build_algo") else algo_or_config
    start = time.perf_counter()
    result: dict[str, Any] = {}
    best = float("-inf")
    try:
        while True:
            result = algo.train()
            value = metric(result, reward_key)
            if value == value:  # not NaN
                best = max(best, value)
            if on_result is not None:
                on_result(result)
            if (
                result["training_iteration"] >= args.stop_iters
                or result["num_env_steps_sampled_lifetime"] >= args.stop_timesteps
                or value >= args.stop_reward
            ):
                break
    finally:
        if stop_algo:
            algo.stop()
    summary = {
        "example": name,
        "reached": best >= args.stop_reward,
        "target": {"/".join(reward_key): args.stop_reward},
        "iterations": result.get("training_iteration"),
        "env_steps": result.get("num_env_steps_sampled_lifetime"),
        "return": metric(result, reward_key),
        "best_return": best,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return summary
