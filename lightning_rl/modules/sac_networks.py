"""SAC's networks: a tanh-squashed Gaussian actor, Q(s, a) critics, and the actor's runner policy.

The actor acts in the module-side action space: with ``normalize_actions=True`` (the default)
that is ``[-1, 1]`` and the ``UnsquashActions`` connector maps it onto the env's bounds, which
a tanh-squashed Gaussian fits exactly; with ``normalize_actions=False`` the squashed action is
scaled to the env's own (finite) bounds here. Evaluation acts with the squashed mean.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.nn import functional as F

from lightning_rl.errors import SpaceError
from lightning_rl.modules.encoders import activation, build_encoder, build_head_hiddens, init_linear, mlp
from lightning_rl.modules.initializers import LayerInit
from lightning_rl.modules.model_config import DefaultModelConfig, resolve_model_config
from lightning_rl.modules.policy_networks import InferencePolicy

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def bounded_box(action_space: gym.Space, who: str = "SAC") -> spaces.Box:
    """The 1-D Box with finite bounds a squashed policy needs, or one clear error."""
    if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
        raise SpaceError(f"{who} needs a 1-D Box or a Discrete action space, got {action_space}.")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise SpaceError(
            f"{who} squashes actions into the action bounds, which must be finite; got "
            f"low={action_space.low} high={action_space.high}."
        )
    return action_space


def vector_size(observation_space: gym.Space, who: str) -> int:
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise SpaceError(
            f"{who} concatenates observation and action, so it needs a 1-D Box observation space, got "
            f"{observation_space}; add FlattenObservations to the env-to-module connectors."
        )
    return int(observation_space.shape[0])


class SquashedGaussianActor(nn.Module):
    """observation -> ``tanh(N(loc, std))`` scaled to the action bounds, with its log-probability."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig | dict | None = None,
    ) -> None:
        super().__init__()
        box = bounded_box(action_space)
        config = resolve_model_config(model_config)
        self.action_dim = int(box.shape[0])
        self.encoder = build_encoder(observation_space, config)
        self.head_hiddens, width = build_head_hiddens(self.encoder.out_dim, config)
        self.head = init_linear(
            nn.Linear(width, 2 * self.action_dim),
            0.01,
            config.orthogonal_init,
            config.layer_init("head_fcnet"),
        )
        low = torch.as_tensor(box.low, dtype=torch.float32)
        high = torch.as_tensor(box.high, dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)
        self.register_buffer("log_scale_sum", self.action_scale.log().sum())

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_std = self.head(self.head_hiddens(self.encoder(obs))).chunk(2, dim=-1)
        return loc, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability (summed over action dimensions)."""
        loc, log_std = self(obs)
        noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
        pre_tanh = loc + log_std.exp() * noise
        # log N(u) - log |d tanh(u) / du| - log scale, with log(1 - tanh(u)^2) written stably.
        log_prob = (-0.5 * noise.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
        log_prob = log_prob - (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh) * self.action_scale + self.action_bias, log_prob - self.log_scale_sum

    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sampled action without its log-probability (what acting needs, at half the ops)."""
        loc, log_std = self(obs)
        noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
        return torch.tanh(loc + log_std.exp() * noise) * self.action_scale + self.action_bias

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        loc, _ = self(obs)
        return torch.tanh(loc) * self.action_scale + self.action_bias


class EnsembleMLP(nn.Module):
    """``num_members`` independent MLPs evaluated as one: each layer is one batched matmul.

    Twin critics are two small MLPs on the same input; evaluating them as an ensemble halves
    the number of operations (and autograd nodes) per critic evaluation, which is what a
    critic update on a small network costs (``benchmarks/off_policy_update_cost.py``).
    """

    def __init__(
        self,
        in_dim: int,
        hiddens: list[int],
        act: str,
        out_dim: int,
        num_members: int,
        *,
        orthogonal: bool = True,
        init: LayerInit | None = None,
        head_init: LayerInit | None = None,
        num_encoder_layers: int | None = None,
    ) -> None:
        """``init`` initialises the first ``num_encoder_layers`` hidden layers (RLlib's
        ``fcnet_*`` keys: the critic's encoder), ``head_init`` the rest and the output
        (``head_fcnet_*``); None/None: the same draws as one plain :func:`mlp`."""
        super().__init__()
        self.num_members = int(num_members)
        split = len(hiddens) if num_encoder_layers is None else int(num_encoder_layers)

        def member() -> list[nn.Linear]:
            # Two stacks built in order draw exactly what one mlp over all hiddens draws.
            encoder = mlp(in_dim, hiddens[:split], act, orthogonal=orthogonal, init=init)
            width = int(hiddens[split - 1]) if split > 0 else in_dim
            head = mlp(
                width,
                hiddens[split:],
                act,
                out_dim,
                orthogonal=orthogonal,
                init=head_init,
                out_init=head_init,
            )
            return [layer for layer in (*encoder, *head) if isinstance(layer, nn.Linear)]

        # Members start exactly like the plain MLPs of the same config (same initialisation).
        members = [member() for _ in range(self.num_members)]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([m[i].weight.detach().t() for m in members]))
            for i in range(len(members[0]))
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([m[i].bias.detach() for m in members]).unsqueeze(1))
            for i in range(len(members[0]))
        )
        self.activation = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in]`` (shared by all members) or ``[E, B, in]`` -> ``[E, B, out]``."""
        if x.dim() == 2:
            x = x.expand(self.num_members, *x.shape)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                x = self.activation(x)
        return x

    def member(self, index: int) -> nn.Sequential:
        """Member ``index`` as a plain ``nn.Sequential`` copy (for inspection and comparisons)."""
        layers: list[nn.Module] = []
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            linear = nn.Linear(weight.shape[1], weight.shape[2])
            with torch.no_grad():
                linear.weight.copy_(weight[index].t())
                linear.bias.copy_(bias[index, 0])
            layers.append(linear)
            if i < last:
                layers.append(copy.deepcopy(self.activation))
        return nn.Sequential(*layers)


class ContinuousQEnsemble(nn.Module):
    """``(observation, action) -> Q`` of shape ``[num_q, B]``: the twin critics as one ensemble."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig | dict | None = None,
        num_q: int = 2,
    ) -> None:
        super().__init__()
        config = resolve_model_config(model_config)
        size = vector_size(observation_space, "SAC's Q-network") + int(bounded_box(action_space).shape[0])
        hiddens = list(config.fcnet_hiddens) + list(config.head_fcnet_hiddens)
        self.net = EnsembleMLP(
            size,
            hiddens,
            config.fcnet_activation,
            1,
            num_q,
            orthogonal=config.orthogonal_init,
            init=config.layer_init("fcnet"),
            head_init=config.layer_init("head_fcnet"),
            num_encoder_layers=len(config.fcnet_hiddens),
        )

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


class SquashedGaussianPolicy(InferencePolicy):
    """Runner-side SAC actor: a squashed Gaussian sample while exploring, the squashed mean otherwise."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig | dict | None = None,
    ) -> None:
        super().__init__()
        self.actor = SquashedGaussianActor(observation_space, action_space, model_config)

    def load_weights(self, weights: dict[str, Any]) -> None:
        self.actor.load_state_dict(weights)

    def forward(self, obs, explore=True, generator=None):
        if explore:
            action = self.actor.act(obs, generator)
        else:
            action = self.actor.mode(obs)
        return {"action": action}
