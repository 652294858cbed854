"""Networks built from spaces and a ``model_config``, and the runner-side inference policy."""

from lightning_rl.modules.distributions import (
    ActionDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    distribution_for,
)
from lightning_rl.modules.encoders import CNNEncoder, MLPEncoder, build_encoder, mlp
from lightning_rl.modules.model_config import DefaultModelConfig, resolve_model_config
from lightning_rl.modules.policy_networks import (
    InferencePolicy,
    PolicyNet,
    PolicySpec,
    StochasticPolicy,
    ValueNet,
)

__all__ = [
    "ActionDistribution",
    "CNNEncoder",
    "CategoricalDistribution",
    "DefaultModelConfig",
    "DiagGaussianDistribution",
    "InferencePolicy",
    "MLPEncoder",
    "PolicyNet",
    "PolicySpec",
    "StochasticPolicy",
    "ValueNet",
    "build_encoder",
    "distribution_for",
    "mlp",
    "resolve_model_config",
]
