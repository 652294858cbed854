"""The runner-side DreamerV3 policy: encoder + RSSM + actor, with one model state per env copy.

Each call is one env step for every env copy: ``h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])``,
``z_t ~ q(z | h_t, embed(o_t))``, then ``a_t`` from the actor on ``[h_t, z_t]`` (a sample when
exploring, the mode in greedy evaluation). ``episode_start`` makes a copy's next step start
from the learned initial state with a zero previous action, exactly as the world model treats
an ``is_first`` step on the learner. Discrete actions are one-hot inside the model and leave
as indices; continuous actions are clipped to [-1, 1] (the default ``UnsquashActions``
connector maps them to the env's bounds), so the action stored for learning is the one the
env executed.

Unlike the recurrent PPO policy it emits no state with its steps: the learner re-infers the
model state from the observations of every replayed window with its current weights.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces
from torch import nn

from lightning_rl.algorithms.dreamerv3.model_sizes import resolve_model_dims
from lightning_rl.algorithms.dreamerv3.networks import Actor
from lightning_rl.algorithms.dreamerv3.world_model import RSSM, build_encoder
from lightning_rl.modules.policy_networks import InferencePolicy


def action_dim(action_space: gym.Space) -> int:
    return int(action_space.n) if isinstance(action_space, spaces.Discrete) else int(action_space.shape[0])


class DreamerV3Policy(InferencePolicy):
    """See the module docstring; built in every EnvRunner from plain kwargs."""

    # Its model state also needs a sampled latent per step; not exportable as a pure function.
    keeps_episode_state = True

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_size: str = "XS",
        model_overrides: dict[str, int] | None = None,
        symlog_obs: bool = True,
    ) -> None:
        super().__init__()
        dims = resolve_model_dims(model_size, model_overrides)
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.action_dim = action_dim(action_space)
        self.encoder = build_encoder(observation_space, dims, symlog_obs)
        self.rssm = RSSM(self.encoder.out_dim, self.action_dim, dims)
        self.actor = Actor(dims.feature_size, self.action_dim, self.discrete, dims)
        self.h = torch.zeros(0, dims.gru_units)
        self.z = torch.zeros(0, dims.stoch_size)
        self.prev_action = torch.zeros(0, self.action_dim)
        self.starting = torch.zeros(0, dtype=torch.bool)

    def reset(self, num_envs: int) -> None:
        self.h = torch.zeros(num_envs, self.h.shape[-1])
        self.z = torch.zeros(num_envs, self.z.shape[-1])
        self.prev_action = torch.zeros(num_envs, self.action_dim)
        self.starting = torch.ones(num_envs, dtype=torch.bool)

    def episode_start(self, env_ids: torch.Tensor) -> None:
        self.starting[env_ids] = True

    def forward(
        self, obs: torch.Tensor, explore: bool = True, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        n = obs.shape[0]
        if self.starting.shape[0] != n:
            self.reset(n)
        h0, z0 = self.rssm.initial_state(n)
        start = self.starting.unsqueeze(-1)
        h = torch.where(start, h0, self.h)
        z = torch.where(start, z0, self.z)
        prev_action = self.prev_action.masked_fill(start, 0.0)
        h = self.rssm.deter_step(h, z, self.rssm.in_action(prev_action))
        embed_in = self.rssm.post_embed(self.encoder(obs))
        z = self.rssm.sample(self.rssm.posterior_logits(h, embed_in), generator)
        features = torch.cat([h, z], -1)
        if explore:
            action, _, _ = self.actor.sample(features, generator)
        else:
            action = self.actor.mode(features)
        if not self.discrete:
            action = action.clamp(-1.0, 1.0)
        self.h, self.z, self.prev_action = h, z, action
        self.starting = torch.zeros_like(self.starting)
        return {"action": action.argmax(-1) if self.discrete else action}

    def load_weights(self, weights: dict[str, Any]) -> None:
        self.load_state_dict(weights)


def policy_weights(encoder: nn.Module, rssm: nn.Module, actor: nn.Module) -> dict[str, torch.Tensor]:
    """The learner's weights under the names :class:`DreamerV3Policy` uses."""
    weights: dict[str, torch.Tensor] = {}
    for prefix, module in (("encoder", encoder), ("rssm", rssm), ("actor", actor)):
        weights.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    return weights
