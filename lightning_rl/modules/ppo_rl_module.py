"""RLlib's default PPO module as an :class:`~lightning_rl.modules.rl_module.RLModule`.

RLlib's custom-model examples subclass ``DefaultPPOTorchRLModule`` (older code:
``PPOTorchRLModule``) and wrap its forward passes, e.g. the action-masking module, which strips
the mask off the observation, calls ``super()._forward_*`` and masks the logits. This class
gives them the same structure built from lightning-rl's networks: ``self.encoder(batch)``
returning ``{ENCODER_OUT: {ACTOR: ..., CRITIC: ...}}``, heads ``self.pi`` and ``self.vf``,
``_forward`` with ``ACTION_DIST_INPUTS``, ``_forward_train`` adding ``EMBEDDINGS`` (the critic
features) and ``compute_values(batch, embeddings)``.

``model_config`` takes the keys of :class:`~lightning_rl.modules.model_config.DefaultModelConfig`
plus RLlib's ``head_fcnet_activation``; other keys are left to subclasses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from gymnasium import spaces
from torch import nn

from lightning_rl.modules.distributions import DiagGaussianDistribution, distribution_for
from lightning_rl.modules.encoders import build_encoder, init_linear, mlp
from lightning_rl.modules.model_config import DefaultModelConfig, resolve_model_config
from lightning_rl.modules.rl_module import (
    ACTOR,
    CRITIC,
    ENCODER_OUT,
    Columns,
    RLModule,
    ValueFunctionAPI,
    check_rl_module_action_space,
)

_MODEL_CONFIG_KEYS = {f.name for f in dataclasses.fields(DefaultModelConfig)}


class ActorCriticEncoder(nn.Module):
    """``batch -> {ENCODER_OUT: {ACTOR: features, CRITIC: features}}``; one trunk when
    ``vf_share_layers``, else two (RLlib's actor-critic encoder)."""

    def __init__(self, observation_space: spaces.Space, config: DefaultModelConfig) -> None:
        super().__init__()
        self.actor_encoder = build_encoder(observation_space, config)
        self.critic_encoder = None if config.vf_share_layers else build_encoder(observation_space, config)
        self.out_dim = int(self.actor_encoder.out_dim)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        actor = self.actor_encoder(obs)
        critic = actor if self.critic_encoder is None else self.critic_encoder(obs)
        return {ENCODER_OUT: {ACTOR: actor, CRITIC: critic}}

    def critic_features(self, batch: dict[str, Any]) -> torch.Tensor:
        encoder = self.actor_encoder if self.critic_encoder is None else self.critic_encoder
        return encoder(batch[Columns.OBS])


class DefaultPPOTorchRLModule(RLModule, ValueFunctionAPI):
    """PPO's default networks with RLlib's RLModule structure (see the module docstring)."""

    def setup(self) -> None:
        given = dict(self.model_config or {})
        config = resolve_model_config({k: v for k, v in given.items() if k in _MODEL_CONFIG_KEYS})
        check_rl_module_action_space(self.action_space)
        head_activation = str(given.get("head_fcnet_activation") or config.fcnet_activation)
        self.encoder = ActorCriticEncoder(self.observation_space, config)
        distribution = distribution_for(self.action_space)
        if isinstance(distribution, DiagGaussianDistribution):
            out = 2 * distribution.dim  # RLlib's layout: [mean, log_std]
        else:
            out = int(distribution.n)
        width = self.encoder.out_dim
        hiddens = list(config.head_fcnet_hiddens)
        orthogonal = config.orthogonal_init
        head_init = config.layer_init("head_fcnet")  # RLlib's head_fcnet_*_initializer keys
        last = int(hiddens[-1]) if hiddens else width
        self.pi = nn.Sequential(
            mlp(width, hiddens, head_activation, orthogonal=orthogonal, init=head_init),
            init_linear(nn.Linear(last, out), 0.01, orthogonal, head_init),
        )
        self.vf = nn.Sequential(
            mlp(width, hiddens, head_activation, orthogonal=orthogonal, init=head_init),
            init_linear(nn.Linear(last, 1), 1.0, orthogonal, head_init),
        )

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features = self.encoder(batch)[ENCODER_OUT]
        return {Columns.ACTION_DIST_INPUTS: self.pi(features[ACTOR])}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features = self.encoder(batch)[ENCODER_OUT]
        return {
            Columns.ACTION_DIST_INPUTS: self.pi(features[ACTOR]),
            Columns.EMBEDDINGS: features[CRITIC],
        }

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self.encoder.critic_features(batch)
        return self.vf(embeddings).squeeze(-1)


#: RLlib's older name of the same class (``ray.rllib.algorithms.ppo.torch.ppo_torch_rl_module``).
PPOTorchRLModule = DefaultPPOTorchRLModule
