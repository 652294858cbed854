"""Encoders built from an observation space and a ``model_config``: MLPs and CNNs."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from lightning_rl._imports import import_object
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.modules.initializers import LayerInit
from lightning_rl.modules.model_config import DefaultModelConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "linear": nn.Identity,
}

NATURE_CNN_FILTERS = [[32, 8, 4], [64, 4, 2], [64, 3, 1]]


def activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ConfigError(
            f"Unknown activation {name!r}. Choices: {', '.join(sorted(_ACTIVATIONS))}."
        ) from None


def init_linear(layer: nn.Linear, gain: float, orthogonal: bool, init: LayerInit | None = None) -> nn.Linear:
    """Orthogonal weights with ``gain`` and zero bias (``orthogonal``), else PyTorch's default;
    a weight or bias initialiser that ``init`` names (RLlib's ``*_initializer`` keys) replaces
    that part. No initialiser named: exactly the same random draws as without ``init``."""
    kernel = None if init is None else init.kernel
    bias = None if init is None else init.bias
    if orthogonal:
        if kernel is None:
            nn.init.orthogonal_(layer.weight, gain)
        if bias is None:
            nn.init.zeros_(layer.bias)
    if init is not None:
        init.apply(layer)
    return layer


def mlp(
    in_dim: int,
    hiddens: Sequence[int],
    act: str,
    out_dim: int | None = None,
    *,
    orthogonal: bool = True,
    out_gain: float = 1.0,
    init: LayerInit | None = None,
    out_init: LayerInit | None = None,
) -> nn.Sequential:
    """Linear-activation stack; an optional linear output layer with its own init gain.

    ``init`` / ``out_init``: the model config's initialisers for the hidden / output layers
    (see :func:`init_linear`)."""
    layers: list[nn.Module] = []
    gain = math.sqrt(2.0) if act.lower() in {"relu", "silu", "swish", "elu", "gelu", "leaky_relu"} else 5 / 3
    if act.lower() == "tanh":
        gain = math.sqrt(2.0)  # CleanRL/SB3 use sqrt(2) for tanh MLPs as well
    size = in_dim
    for hidden in hiddens:
        layers += [init_linear(nn.Linear(size, int(hidden)), gain, orthogonal, init), activation(act)]
        size = int(hidden)
    if out_dim is not None:
        layers.append(init_linear(nn.Linear(size, out_dim), out_gain, orthogonal, out_init))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """An MLP over a 1-D Box observation, or over a flattened N-D one (``obs_shape``)."""

    def __init__(
        self, obs_dim: int, config: DefaultModelConfig, obs_shape: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.net = mlp(
            obs_dim,
            config.fcnet_hiddens,
            config.fcnet_activation,
            orthogonal=config.orthogonal_init,
            init=config.layer_init("fcnet"),
        )
        self.out_dim = int(config.fcnet_hiddens[-1]) if config.fcnet_hiddens else obs_dim
        # Trailing dims to flatten (small boards, grids); None: the observation is already a vector.
        self.obs_ndim = len(obs_shape) if obs_shape is not None and len(obs_shape) != 1 else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.obs_ndim is not None:
            obs = obs.flatten(-self.obs_ndim).float()
        return self.net(obs)


class CNNEncoder(nn.Module):
    """Conv stack (Nature-CNN by default) over image observations, then an MLP.

    uint8 observations stay uint8 until here (half the memory of float in buffers) and are
    scaled to [0, 1] on the way in. Channel-last images (H, W, C) are transposed.
    """

    def __init__(self, shape: Sequence[int], config: DefaultModelConfig, uint8: bool) -> None:
        super().__init__()
        shape = tuple(int(s) for s in shape)
        self.channels_last = shape[-1] <= 4 < shape[0]
        c, h, w = (shape[2], shape[0], shape[1]) if self.channels_last else shape
        self.scale = 1.0 / 255.0 if uint8 else 1.0
        filters = config.conv_filters or NATURE_CNN_FILTERS
        layers: list[nn.Module] = []
        in_c = c
        conv_init = config.layer_init("conv")  # PyTorch's default init unless the config names one
        for out_c, kernel, stride in filters:
            layers += [
                conv_init.apply(nn.Conv2d(in_c, int(out_c), int(kernel), int(stride))),
                activation(config.conv_activation),
            ]
            in_c = int(out_c)
        layers.append(nn.Flatten())
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, c, h, w)).shape[-1]
        hiddens = config.fcnet_hiddens if config.conv_filters is not None else [512]
        self.mlp = mlp(
            n_flat,
            hiddens,
            config.conv_activation,
            orthogonal=config.orthogonal_init,
            init=config.layer_init("fcnet"),
        )
        self.out_dim = int(hiddens[-1]) if hiddens else n_flat

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:]).float() * self.scale
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return self.mlp(self.conv(x)).reshape(*lead, -1)


class _TensorDictEncoder(nn.Module):
    """Calls a user's TensorDictModule with the observation tensor, returning its first output."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.module(obs)
        return out[0] if isinstance(out, tuple) else out


def build_head_hiddens(width: int, config: DefaultModelConfig) -> tuple[nn.Module, int]:
    """The optional ``head_fcnet_hiddens`` MLP after an encoder of output ``width``, and the
    width it outputs (an identity when the config has no head layers)."""
    if not config.head_fcnet_hiddens:
        return nn.Identity(), width
    layers = mlp(
        width,
        config.head_fcnet_hiddens,
        config.fcnet_activation,
        orthogonal=config.orthogonal_init,
        init=config.layer_init("head_fcnet"),
    )
    return layers, int(config.head_fcnet_hiddens[-1])


def _is_own_network(obj: Any) -> bool:
    """What a checkpoint may name as ``custom_model`` without an allow-list: a network class of
    lightning-rl (any ``nn.Module`` would admit classes that do more than compute)."""
    in_package = str(getattr(obj, "__module__", "")).startswith("lightning_rl.")
    return isinstance(obj, type) and issubclass(obj, nn.Module) and in_package


def build_custom_encoder(observation_space: gym.Space, config: DefaultModelConfig) -> nn.Module:
    """The user's encoder from ``model_config["custom_model"]``.

    Contract: an ``nn.Module`` class (or import path, or factory) called as
    ``custom_model(observation_space, **custom_model_config)``, mapping an observation batch
    ``[B, ...]`` to features ``[B, F]``. A TensorDictModule works too (it is called with the
    observation tensor; its first output is used). ``out_dim`` is read from the module if it has
    one, else measured on a sample observation. Heads, distributions and value functions are
    added around it by the algorithm, so one encoder serves every algorithm.
    """
    factory = config.custom_model
    if isinstance(factory, str):
        try:
            factory = import_object(factory, kind="model_config custom_model", accept=_is_own_network)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"Cannot import model_config custom_model {config.custom_model!r}: {exc}"
            ) from exc
    module = factory(observation_space, **config.custom_model_config)
    # A TensorDictModule can only come from a user who imported tensordict; looking it up
    # instead of importing it keeps tensordict (and the torch._dynamo it loads, about 1 s and
    # 70 MB) out of every EnvRunner process that samples with the default networks.
    tensordict_nn = sys.modules.get("tensordict.nn")
    if tensordict_nn is not None and isinstance(module, tensordict_nn.TensorDictModuleBase):
        module = _TensorDictEncoder(module)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"custom_model {config.custom_model!r} built {module!r}, not a torch nn.Module.")
    if not hasattr(module, "out_dim"):
        sample = torch.as_tensor(np.asarray(observation_space.sample())[None])
        with torch.no_grad():
            module.out_dim = int(module(sample).shape[-1])
    return module


def build_encoder(observation_space: gym.Space, config: DefaultModelConfig) -> nn.Module:
    """An encoder with an ``out_dim`` attribute for the (module-side) observation space."""
    if config.custom_model is not None:
        return build_custom_encoder(observation_space, config)
    if not isinstance(observation_space, spaces.Box):
        raise SpaceError(
            f"The default encoders need a Box observation space, got {observation_space}. Add "
            "FlattenObservations to the env-to-module connectors, e.g. .env_runners("
            "env_to_module_connector=lambda env: FlattenObservations())."
        )
    shape = observation_space.shape
    if len(shape) == 3 and (config.conv_filters is not None or is_image_like(shape)):
        return CNNEncoder(shape, config, uint8=observation_space.dtype == np.uint8)
    if len(shape) == 1:
        return MLPEncoder(int(shape[0]), config)
    # A small board or grid ((3, 3, 2) tic-tac-toe, (6, 7, 2) connect four) or a 2-D array:
    # too small for the default conv stack, so it is flattened into the MLP.
    return MLPEncoder(int(np.prod(shape)), config, obs_shape=shape)


def image_hw(shape: Sequence[int]) -> tuple[int, int]:
    """(height, width) of a 3-D observation, channel-last ``(H, W, C<=4)`` or channel-first."""
    shape = tuple(int(s) for s in shape)
    return (shape[0], shape[1]) if shape[-1] <= 4 < shape[0] else (shape[1], shape[2])


def is_image_like(shape: Sequence[int], filters: Sequence[Sequence[int]] = NATURE_CNN_FILTERS) -> bool:
    """A 3-D observation the default conv stack can read: every layer still has an output.

    RLlib only builds its default CNN for 3-D observations of the sizes its filter presets fit;
    a 3-D array smaller than that (a board game's planes) is a vector in disguise. With an
    explicit ``conv_filters`` the user's stack is used for any 3-D observation.
    """
    height, width = image_hw(shape)
    for _, kernel, stride in filters:
        height = (height - int(kernel)) // int(stride) + 1
        width = (width - int(kernel)) // int(stride) + 1
        if height < 1 or width < 1:
            return False
    return True
