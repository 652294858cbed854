"""SAC (continuous and discrete actions): the algorithm (a LightningModule) and its fluent config."""

from lightning_rl.algorithms.sac.sac import SAC, DiscreteSACModule, SACModule
from lightning_rl.config.algorithm_config import AlgorithmConfig

SACConfig = AlgorithmConfig.for_algorithm(SAC)

__all__ = ["SAC", "DiscreteSACModule", "SACConfig", "SACModule"]
