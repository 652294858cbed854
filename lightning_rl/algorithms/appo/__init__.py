"""APPO: asynchronous PPO (clipped surrogate on V-trace advantages, target network) and its config."""

from lightning_rl.algorithms.appo.appo import APPO, APPOModule, RecurrentAPPOModule, RLModuleAPPOModule
from lightning_rl.config.algorithm_config import AlgorithmConfig

APPOConfig = AlgorithmConfig.for_algorithm(APPO)

__all__ = ["APPO", "APPOConfig", "APPOModule", "RLModuleAPPOModule", "RecurrentAPPOModule"]
