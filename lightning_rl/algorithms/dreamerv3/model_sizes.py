"""DreamerV3's model sizes: one switch (``model_size``) sets every layer width.

XS to XL are the paper's Table B.1 (Hafner et al. 2023, arXiv:2301.04104v1), the sizes RLlib
uses too; every size keeps 32 categoricals of 32 classes for the stochastic latent. The
smaller ``nano``/``micro``/``mini``/``XXS`` are RLlib's debugging sizes (not in the paper):
fast enough for tests and smoke runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lightning_rl.errors import ConfigError, unknown_name_message


@dataclass(frozen=True)
class ModelDims:
    """Widths of one model size (see the module docstring)."""

    gru_units: int
    dense_units: int
    dense_layers: int
    cnn_multiplier: int
    num_categoricals: int = 32
    num_classes: int = 32

    @property
    def stoch_size(self) -> int:
        """Width of a flattened one-hot latent ``z``."""
        return self.num_categoricals * self.num_classes

    @property
    def feature_size(self) -> int:
        """Width of a model state ``(h, z)`` as the heads, actor and critic see it."""
        return self.gru_units + self.stoch_size

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


MODEL_SIZES: dict[str, ModelDims] = {
    # RLlib's debugging sizes.
    "nano": ModelDims(16, 16, 1, 2, 4, 4),
    "micro": ModelDims(32, 32, 1, 4, 8, 8),
    "mini": ModelDims(64, 64, 1, 8, 16, 16),
    "XXS": ModelDims(128, 128, 1, 16),
    # The paper's Table B.1.
    "XS": ModelDims(256, 256, 1, 24),
    "S": ModelDims(512, 512, 2, 32),
    "M": ModelDims(1024, 640, 3, 48),
    "L": ModelDims(2048, 768, 4, 64),
    "XL": ModelDims(4096, 1024, 5, 96),
}


def resolve_model_dims(model_size: str, overrides: dict[str, Any] | None = None) -> ModelDims:
    """The widths of ``model_size``, with single fields replaced by ``overrides``."""
    if model_size not in MODEL_SIZES:
        raise ConfigError(unknown_name_message("DreamerV3 model_size", str(model_size), MODEL_SIZES))
    dims = MODEL_SIZES[model_size]
    if not overrides:
        return dims
    names = [f.name for f in dataclasses.fields(ModelDims)]
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(unknown_name_message("DreamerV3 model_overrides key", key, names))
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"DreamerV3 model_overrides {key} must be a positive integer, got {value!r}.")
    return dataclasses.replace(dims, **overrides)
