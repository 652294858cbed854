"""BC: the algorithm (a LightningModule) and its RLlib-style fluent config."""

from lightning_rl.algorithms.bc.bc import BC
from lightning_rl.config.algorithm_config import AlgorithmConfig

BCConfig = AlgorithmConfig.for_algorithm(BC)

__all__ = ["BC", "BCConfig"]
