"""``SACConfig``: the fluent builder for :class:`~lightning_rl.algorithms.sac.SAC`."""

from lightning_rl.algorithms.sac.sac import SAC
from lightning_rl.config.algorithm_config import AlgorithmConfig


class SACConfig(AlgorithmConfig):
    """``SACConfig().environment("Pendulum-v1").training(tau=0.005).build_algo()``."""

    algo_class = SAC
