"""``DQNConfig``: the fluent builder for :class:`~lightning_rl.algorithms.dqn.DQN`."""

from lightning_rl.algorithms.dqn.dqn import DQN
from lightning_rl.config.algorithm_config import AlgorithmConfig


class DQNConfig(AlgorithmConfig):
    """``DQNConfig().environment("CartPole-v1").training(n_step=3, noisy=True).build_algo()``."""

    algo_class = DQN
