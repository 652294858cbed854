"""Ray Tune over lightning-rl: a function trainable from a config factory.

``tune_trainable(make_config)`` turns ``make_config(tune_config) -> AlgorithmConfig`` into a
Tune function trainable that builds the algorithm, reports every iteration's (nested, RLlib-
named) results and stops when Tune says so. Each report also carries
``evaluation_return``, the latest evaluation mean (``-inf`` before the first evaluation), so a
stop criterion on it is defined every iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lightning_rl.config.algorithm_config import AlgorithmConfig


def tune_trainable(
    make_config: Callable[[dict[str, Any]], AlgorithmConfig], max_iterations: int = 1000
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable running ``make_config(config).build_algo()`` iteration by iteration."""

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        algo_config = make_config(config)
        algo_config.trainer_kwargs.setdefault("default_root_dir", tune.get_context().get_trial_dir())
        algo = algo_config.build_algo()
        last_evaluation = -math.inf
        try:
            for _ in range(max_iterations):
                result = algo.train()
                if "evaluation" in result:
                    last_evaluation = result["evaluation"]["episode_return_mean"]
                tune.report({**result, "evaluation_return": last_evaluation})
        finally:
            algo.stop()

    return trainable
