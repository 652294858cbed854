"""DQN (with the Rainbow options): the algorithm (a LightningModule) and its fluent config."""

from lightning_rl.algorithms.dqn.config import DQNConfig
from lightning_rl.algorithms.dqn.dqn import DQN, DQNModule

__all__ = ["DQN", "DQNConfig", "DQNModule"]
