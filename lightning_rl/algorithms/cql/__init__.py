"""CQL: the algorithm (a LightningModule) and its RLlib-style fluent config."""

from lightning_rl.algorithms.cql.cql import CQL, CQLModule, DiscreteCQLModule
from lightning_rl.config.algorithm_config import AlgorithmConfig

CQLConfig = AlgorithmConfig.for_algorithm(CQL)

__all__ = ["CQL", "CQLConfig", "CQLModule", "DiscreteCQLModule"]
