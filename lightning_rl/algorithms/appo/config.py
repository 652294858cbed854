"""``APPOConfig``: the fluent builder for :class:`~lightning_rl.algorithms.appo.APPO`."""

from lightning_rl.algorithms.appo.appo import APPO
from lightning_rl.config.algorithm_config import AlgorithmConfig


class APPOConfig(AlgorithmConfig):
    """``APPOConfig().environment("CartPole-v1").env_runners(num_env_runners=2).build_algo()``."""

    algo_class = APPO
