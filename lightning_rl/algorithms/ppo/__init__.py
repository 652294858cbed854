"""PPO: the algorithm (a LightningModule) and its RLlib-style fluent config."""

from lightning_rl.algorithms.ppo.ppo import PPO
from lightning_rl.config.algorithm_config import AlgorithmConfig

PPOConfig = AlgorithmConfig.for_algorithm(PPO)

__all__ = ["PPO", "PPOConfig"]
