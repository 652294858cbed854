"""``model_config``: the knobs of the default networks (RLlib's ``DefaultModelConfig`` names)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lightning_rl.errors import ConfigError, unknown_name_message
from lightning_rl.modules.initializers import (
    ALL_INITIALIZER_KEYS,
    INITIALIZER_GROUPS,
    LayerInit,
    canonical_initializer_settings,
    initializer_keys,
)


@dataclass
class DefaultModelConfig:
    """Default network settings; pass a dict with any subset of these keys as ``model_config``.

    The defaults are the small tanh MLP that PPO implementations (CleanRL, Stable-Baselines3)
    use for classic control: it learns CartPole fastest and keeps sampling cheap. RLlib's
    ``[256, 256]`` is one ``model_config={"fcnet_hiddens": [256, 256]}`` away.
    """

    fcnet_hiddens: list[int] = field(default_factory=lambda: [64, 64])
    fcnet_activation: str = "tanh"
    # RLlib's initialisers (torch.nn.init functions or their names, stored as the name; see
    # lightning_rl.modules.initializers): fcnet_* for the encoder MLP, head_fcnet_* for the
    # head layers and outputs (policy, value, Q), conv_* for the conv stack. None keeps the
    # init that orthogonal_init chooses.
    fcnet_kernel_initializer: Any = None
    fcnet_kernel_initializer_kwargs: dict[str, Any] | None = None
    fcnet_bias_initializer: Any = None
    fcnet_bias_initializer_kwargs: dict[str, Any] | None = None
    head_fcnet_kernel_initializer: Any = None
    head_fcnet_kernel_initializer_kwargs: dict[str, Any] | None = None
    head_fcnet_bias_initializer: Any = None
    head_fcnet_bias_initializer_kwargs: dict[str, Any] | None = None
    conv_kernel_initializer: Any = None
    conv_kernel_initializer_kwargs: dict[str, Any] | None = None
    conv_bias_initializer: Any = None
    conv_bias_initializer_kwargs: dict[str, Any] | None = None
    # Extra layers between the shared encoder and each head.
    head_fcnet_hiddens: list[int] = field(default_factory=list)
    # One trunk for policy and value function (False: two separate MLPs).
    vf_share_layers: bool = False
    # Image encoders: list of [out_channels, kernel, stride]; None picks a Nature-CNN for 3-D obs.
    conv_filters: list[list[int]] | None = None
    conv_activation: str = "relu"
    # Continuous actions: a state-independent log std (True) or one output by the network.
    free_log_std: bool = True
    log_std_init: float = 0.0
    # Orthogonal initialisation (CleanRL/SB3); False keeps PyTorch's default init.
    orthogonal_init: bool = True
    # Recurrent and attention settings (used by memory models).
    use_lstm: bool = False
    use_gru: bool = False
    lstm_cell_size: int = 128
    max_seq_len: int = 32
    lstm_use_prev_action: bool = False
    lstm_use_prev_reward: bool = False
    use_attention: bool = False
    attention_num_transformer_units: int = 1
    attention_dim: int = 64
    attention_num_heads: int = 2
    attention_memory_inference: int = 32
    attention_memory_training: int = 32
    # A user's own encoder: import path (or class) of an nn.Module built as
    # custom_model(observation_space, **custom_model_config), observations -> features.
    custom_model: Any = None
    custom_model_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked at the door and kept as names: the config is stored as plain data.
        given = {key: getattr(self, key) for key in ALL_INITIALIZER_KEYS}
        for key, value in canonical_initializer_settings(given).items():
            setattr(self, key, value)

    def layer_init(self, group: str) -> LayerInit:
        """The initialisers of one layer group: ``"fcnet"``, ``"head_fcnet"`` or ``"conv"``."""
        if group not in INITIALIZER_GROUPS:
            raise ConfigError(unknown_name_message("initializer group", group, INITIALIZER_GROUPS))
        kernel, kernel_kwargs, bias, bias_kwargs = (getattr(self, key) for key in initializer_keys(group))
        return LayerInit(group, kernel, dict(kernel_kwargs or {}), bias, dict(bias_kwargs or {}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_model_config(value: DefaultModelConfig | dict | None) -> DefaultModelConfig:
    """Merge a user's partial dict onto the defaults; unknown keys get one clear error."""
    if value is None:
        return DefaultModelConfig()
    if isinstance(value, DefaultModelConfig):
        value.__post_init__()  # fields set after construction are checked (and named) too
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"model_config must be a dict or DefaultModelConfig, got {value!r}")
    names = {f.name for f in dataclasses.fields(DefaultModelConfig)}
    for key in value:
        if key not in names:
            raise ConfigError(unknown_name_message("model_config key", key, names))
    config = DefaultModelConfig(**value)
    if any(int(h) <= 0 for h in config.fcnet_hiddens):
        raise ConfigError(f"model_config.fcnet_hiddens must be positive sizes, got {config.fcnet_hiddens}")
    return config
