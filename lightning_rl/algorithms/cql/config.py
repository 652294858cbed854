"""``CQLConfig``: the fluent builder for :class:`~lightning_rl.algorithms.cql.CQL`."""

from lightning_rl.algorithms.cql.cql import CQL
from lightning_rl.config.algorithm_config import AlgorithmConfig


class CQLConfig(AlgorithmConfig):
    """``CQLConfig().environment("Pendulum-v1").offline_data(input_="path/").training(min_q_weight=5.0)``."""

    algo_class = CQL
