"""``PPOConfig``: the fluent builder for :class:`~lightning_rl.algorithms.ppo.PPO`."""

from lightning_rl.algorithms.ppo.ppo import PPO
from lightning_rl.config.algorithm_config import AlgorithmConfig


class PPOConfig(AlgorithmConfig):
    """``PPOConfig().environment("CartPole-v1").training(lr=1e-3).build_algo()``."""

    algo_class = PPO
