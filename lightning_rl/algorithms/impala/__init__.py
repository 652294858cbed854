"""IMPALA: the algorithm (a LightningModule), its V-trace targets and its fluent config."""

from lightning_rl.algorithms.impala.impala import (
    IMPALA,
    ImpalaModule,
    RecurrentImpalaModule,
    RLModuleImpalaModule,
)
from lightning_rl.algorithms.impala.vtrace import bootstrap_next_values, vtrace
from lightning_rl.config.algorithm_config import AlgorithmConfig

IMPALAConfig = AlgorithmConfig.for_algorithm(IMPALA)

__all__ = [
    "IMPALA",
    "IMPALAConfig",
    "ImpalaModule",
    "RLModuleImpalaModule",
    "RecurrentImpalaModule",
    "bootstrap_next_values",
    "vtrace",
]
