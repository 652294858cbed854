"""MARWIL: the algorithm (a LightningModule) and its RLlib-style fluent config."""

from lightning_rl.algorithms.marwil.marwil import MARWIL, MARWILModule
from lightning_rl.config.algorithm_config import AlgorithmConfig

MARWILConfig = AlgorithmConfig.for_algorithm(MARWIL)

__all__ = ["MARWIL", "MARWILConfig", "MARWILModule"]
