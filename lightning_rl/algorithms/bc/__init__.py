"""BC: the algorithm (a LightningModule) and its RLlib-style fluent config."""

from lightning_rl.algorithms.bc.bc import BC
from lightning_rl.algorithms.bc.config import BCConfig

__all__ = ["BC", "BCConfig"]
