"""``BCConfig``: the fluent builder for :class:`~lightning_rl.algorithms.bc.BC`."""

from lightning_rl.algorithms.bc.bc import BC
from lightning_rl.config.algorithm_config import AlgorithmConfig


class BCConfig(AlgorithmConfig):
    """``BCConfig().environment("CartPole-v1").offline_data(input_="path/").build_algo()``."""

    algo_class = BC
