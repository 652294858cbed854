"""SAC (continuous and discrete actions): the algorithm (a LightningModule) and its fluent config."""

from lightning_rl.algorithms.sac.config import SACConfig
from lightning_rl.algorithms.sac.sac import SAC, DiscreteSACModule, SACModule

__all__ = ["SAC", "DiscreteSACModule", "SACConfig", "SACModule"]
