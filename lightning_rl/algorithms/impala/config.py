"""``IMPALAConfig``: the fluent builder for :class:`~lightning_rl.algorithms.impala.IMPALA`."""

from lightning_rl.algorithms.impala.impala import IMPALA
from lightning_rl.config.algorithm_config import AlgorithmConfig


class IMPALAConfig(AlgorithmConfig):
    """``IMPALAConfig().environment("CartPole-v1").env_runners(num_env_runners=2).build_algo()``."""

    algo_class = IMPALA
