"""APPO: asynchronous PPO (clipped surrogate on V-trace advantages, target network) and its config."""

from lightning_rl.algorithms.appo.appo import APPO, APPOModule, RecurrentAPPOModule
from lightning_rl.algorithms.appo.config import APPOConfig

__all__ = ["APPO", "APPOConfig", "APPOModule", "RecurrentAPPOModule"]
