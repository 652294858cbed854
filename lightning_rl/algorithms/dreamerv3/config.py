"""``DreamerV3Config``: the fluent builder for :class:`~lightning_rl.algorithms.dreamerv3.DreamerV3`."""

from lightning_rl.algorithms.dreamerv3.dreamerv3 import DreamerV3
from lightning_rl.config.algorithm_config import AlgorithmConfig


class DreamerV3Config(AlgorithmConfig):
    """RLlib-style fluent builder, e.g.
    ``DreamerV3Config().environment("CartPole-v1").training(model_size="XS", training_ratio=64)``."""

    algo_class = DreamerV3
