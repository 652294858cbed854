"""CQL: the algorithm (a LightningModule) and its RLlib-style fluent config."""

from lightning_rl.algorithms.cql.config import CQLConfig
from lightning_rl.algorithms.cql.cql import CQL, CQLModule, DiscreteCQLModule

__all__ = ["CQL", "CQLConfig", "CQLModule", "DiscreteCQLModule"]
