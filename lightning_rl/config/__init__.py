"""The RLlib-style fluent configuration."""

from lightning_rl.config.algorithm_config import AlgorithmConfig, NotProvided

__all__ = ["AlgorithmConfig", "NotProvided"]
