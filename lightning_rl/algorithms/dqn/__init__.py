"""DQN (with the Rainbow options): the algorithm (a LightningModule) and its fluent config."""

from lightning_rl.algorithms.dqn.dqn import DQN, DQNModule
from lightning_rl.config.algorithm_config import AlgorithmConfig

DQNConfig = AlgorithmConfig.for_algorithm(DQN)

__all__ = ["DQN", "DQNConfig", "DQNModule"]
