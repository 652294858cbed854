"""MARWIL: the algorithm (a LightningModule) and its RLlib-style fluent config."""

from lightning_rl.algorithms.marwil.config import MARWILConfig
from lightning_rl.algorithms.marwil.marwil import MARWIL, MARWILModule

__all__ = ["MARWIL", "MARWILConfig", "MARWILModule"]
