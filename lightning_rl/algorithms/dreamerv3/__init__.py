"""DreamerV3: the model-based algorithm (a LightningModule), its fluent config and networks."""

from lightning_rl.algorithms.dreamerv3.dreamerv3 import DreamerV3, DreamerV3Module
from lightning_rl.algorithms.dreamerv3.dreams import LogDreams
from lightning_rl.algorithms.dreamerv3.model_sizes import MODEL_SIZES, ModelDims
from lightning_rl.algorithms.dreamerv3.runner_policy import DreamerV3Policy
from lightning_rl.config.algorithm_config import AlgorithmConfig

DreamerV3Config = AlgorithmConfig.for_algorithm(DreamerV3)

__all__ = [
    "MODEL_SIZES",
    "DreamerV3",
    "DreamerV3Config",
    "DreamerV3Module",
    "DreamerV3Policy",
    "LogDreams",
    "ModelDims",
]
