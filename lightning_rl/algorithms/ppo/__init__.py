"""PPO: the algorithm (a LightningModule) and its RLlib-style fluent config."""

from lightning_rl.algorithms.ppo.config import PPOConfig
from lightning_rl.algorithms.ppo.ppo import PPO

__all__ = ["PPO", "PPOConfig"]
