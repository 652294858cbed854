"""``MARWILConfig``: the fluent builder for :class:`~lightning_rl.algorithms.marwil.MARWIL`."""

from lightning_rl.algorithms.marwil.marwil import MARWIL
from lightning_rl.config.algorithm_config import AlgorithmConfig


class MARWILConfig(AlgorithmConfig):
    """``MARWILConfig().environment("CartPole-v1").offline_data(input_="path/").training(beta=1.0)``."""

    algo_class = MARWIL
