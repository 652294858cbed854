"""Q-networks for discrete actions (DQN and its Rainbow options, discrete SAC) and their runner policy.

One :class:`QNetwork` covers RLlib's DQN switches: a dueling head (``V + A - mean A``), a
distributional C51 head (``num_atoms`` logits per action over a fixed support from ``v_min``
to ``v_max``) and noisy head layers (torchrl's ``NoisyLinear``, factorised Gaussian noise that
is on in ``train()`` mode and off in ``eval()`` mode). :class:`EpsilonGreedyQPolicy` is what the
EnvRunners run: greedy actions, replaced by uniform random ones with the learner's current
epsilon while exploring; evaluation (``explore=False``) is greedy with the noise off.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces
from torch import nn

from lightning_rl.errors import SpaceError
from lightning_rl.modules.distributions import CategoricalDistribution
from lightning_rl.modules.encoders import activation, build_encoder, init_linear
from lightning_rl.modules.initializers import LayerInit
from lightning_rl.modules.model_config import DefaultModelConfig, resolve_model_config
from lightning_rl.modules.policy_networks import (
    InferencePolicy,
    apply_action_mask,
    observation_key,
    split_action_mask,
)


def _layer(
    in_dim: int,
    out_dim: int,
    noisy: bool,
    sigma0: float,
    gain: float,
    orthogonal: bool,
    init: LayerInit | None,
) -> nn.Module:
    if noisy:
        # Noise follows train()/eval(): learners train with noise, evaluation acts without.
        # NoisyLinear keeps its own (mu, sigma) init; the head initialisers do not apply.
        # Imported here, not at the top: torchrl.modules loads torchrl.data, tensordict and
        # torch._dynamo (about 1.5 s and 120 MB), which every EnvRunner process of a plain
        # DQN would otherwise pay for this one class (tests/test_runner_footprint.py).
        from torchrl.modules import NoisyLinear

        return NoisyLinear(in_dim, out_dim, std_init=sigma0, use_exploration_type=False)
    return init_linear(nn.Linear(in_dim, out_dim), gain, orthogonal, init)


def q_head(
    in_dim: int,
    hiddens: Sequence[int],
    act: str,
    out_dim: int,
    *,
    noisy: bool = False,
    sigma0: float = 0.5,
    orthogonal: bool = True,
    init: LayerInit | None = None,
) -> nn.Sequential:
    """Hidden layers + a linear output; every layer noisy when ``noisy``. ``init``: the model
    config's head initialisers (RLlib's ``head_fcnet_*``), for hidden and output layers."""
    layers: list[nn.Module] = []
    size = in_dim
    for hidden in hiddens:
        layers += [_layer(size, int(hidden), noisy, sigma0, 2**0.5, orthogonal, init), activation(act)]
        size = int(hidden)
    layers.append(_layer(size, out_dim, noisy, sigma0, 1.0, orthogonal, init))
    return nn.Sequential(*layers)


class QNetwork(nn.Module):
    """observation -> one Q-value per discrete action (``forward``), or C51 logits (``logits``)."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig | dict | None = None,
        *,
        dueling: bool = False,
        num_atoms: int = 1,
        v_min: float = -10.0,
        v_max: float = 10.0,
        noisy: bool = False,
        sigma0: float = 0.5,
    ) -> None:
        super().__init__()
        if not isinstance(action_space, spaces.Discrete):
            raise SpaceError(f"A Q-network needs a Discrete action space, got {action_space}.")
        config = resolve_model_config(model_config)
        self.num_actions = int(action_space.n)
        self.num_atoms = int(num_atoms)
        self.dueling = bool(dueling)
        # Dict(observation, action_mask) observations: encode the observation, mask the Q-values.
        self.obs_key = observation_key(observation_space)
        observation_space, self.masked = split_action_mask(observation_space)
        self.encoder = build_encoder(observation_space, config)
        width = self.encoder.out_dim
        head = dict(
            noisy=noisy,
            sigma0=sigma0,
            orthogonal=config.orthogonal_init,
            init=config.layer_init("head_fcnet"),
        )
        hiddens, act = config.head_fcnet_hiddens, config.fcnet_activation
        self.advantage = q_head(width, hiddens, act, self.num_actions * self.num_atoms, **head)
        self.value = q_head(width, hiddens, act, self.num_atoms, **head) if self.dueling else None
        if self.num_atoms > 1:
            self.register_buffer("support", torch.linspace(float(v_min), float(v_max), self.num_atoms))
        # torchrl.modules is in sys.modules whenever a noisy layer was built (q_head imports it).
        noisy_linear = getattr(sys.modules.get("torchrl.modules"), "NoisyLinear", None)
        self.noisy_layers = tuple(m for m in self.modules() if noisy_linear and isinstance(m, noisy_linear))

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values ``[..., A]``; with C51, per-atom logits ``[..., A, atoms]``."""
        features = self.encoder(obs[self.obs_key] if self.masked else obs)
        advantage = self.advantage(features)
        if self.num_atoms > 1:
            advantage = advantage.unflatten(-1, (self.num_actions, self.num_atoms))
        if self.value is None:
            return advantage
        value = self.value(features)
        action_dim = -2 if self.num_atoms > 1 else -1
        if self.num_atoms > 1:
            value = value.unsqueeze(-2)
        return value + advantage - advantage.mean(dim=action_dim, keepdim=True)

    def q_values(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected Q-values ``[..., A]`` from :meth:`logits`' output."""
        if self.num_atoms == 1:
            return logits
        return (logits.softmax(-1) * self.support).sum(-1)

    def mask_illegal(self, q_values: torch.Tensor, obs: Any) -> torch.Tensor:
        """Q-values ``[..., A]`` with illegal actions far below every legal one (masked obs only)."""
        return apply_action_mask(q_values, obs) if self.masked else q_values

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Expected Q-values ``[..., A]``; illegal actions (action masks) masked out."""
        return self.mask_illegal(self.q_values(self.logits(obs)), obs)

    def reset_noise(self) -> None:
        for layer in self.noisy_layers:
            layer.reset_noise()


class EpsilonGreedyQPolicy(InferencePolicy):
    """Runner-side DQN policy: argmax Q, epsilon-greedy while exploring (epsilon from the learner)."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig | dict | None = None,
        **q_network_kwargs: Any,
    ) -> None:
        super().__init__()
        self.q_net = QNetwork(observation_space, action_space, model_config, **q_network_kwargs)
        self.num_actions = self.q_net.num_actions
        self.uniform = CategoricalDistribution(self.num_actions)
        self.epsilon = 0.0
        self._noisy = bool(self.q_net.noisy_layers)

    def set_extra(self, extra: dict[str, Any]) -> None:
        self.epsilon = float(extra.get("epsilon", self.epsilon))

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.q_net.load_state_dict(weights)

    def forward(self, obs, explore=True, generator=None):
        if self._noisy and self.q_net.training != explore:
            # Exploring acts with the noise sample the learner last drew (it ships with the
            # weights); evaluation acts on the mean weights.
            self.q_net.train(explore)
        q_values = self.q_net(obs)
        action = q_values.argmax(dim=-1)
        if explore and self.epsilon > 0.0:
            size = action.shape
            if self.q_net.masked:  # uniform over the legal actions only
                uniform = self.q_net.mask_illegal(torch.zeros_like(q_values), obs)
                random_actions, _ = self.uniform.sample((uniform,), generator)
            else:
                random_actions = torch.randint(self.num_actions, size, generator=generator)
            take_random = torch.rand(size, generator=generator) < self.epsilon
            action = torch.where(take_random, random_actions, action)
        return {"action": action}
