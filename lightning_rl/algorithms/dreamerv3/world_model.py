"""The world model: encoder, RSSM (discrete latents), decoder, two-hot reward and continue heads.

The RSSM's state is ``(h, z)``: ``h`` the GRU's deterministic state, ``z`` a one-hot sample of
``num_categoricals`` categoricals of ``num_classes`` classes (flattened), drawn with straight-
through gradients. One step is ``h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])``, then the posterior
``z_t ~ q(z | h_t, embed(o_t))`` (observing) or the prior ``z_t ~ p(z | h_t)`` (imagining).
Episode starts (and the first step of every replayed window) begin from the learned initial
state with a zero previous action, exactly as the runner-side policy does.

Everything that does not depend on the previous step (the observation embedding, its
projection into the posterior, the action projection, the prior of every ``h``) is computed
for the whole ``[B, T]`` window in one batched call outside the time loop; only the GRU and
the posterior's last layers run step by step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torchrl.modules import SymExpTwoHot
from torchrl.modules.functional import symlog
from torchrl.objectives import categorical_kl_terms, two_hot_cross_entropy

from lightning_rl.algorithms.dreamerv3.model_sizes import ModelDims
from lightning_rl.algorithms.dreamerv3.networks import (
    LAYER_NORM_EPS,
    UNIMIX,
    ImageDecoder,
    ImageEncoder,
    LayerNormGRUCell,
    MLPHead,
    NormDense,
    VectorDecoder,
    VectorEncoder,
    init_weights,
)
from lightning_rl.errors import SpaceError

NUM_BINS = 255


def is_image_space(space: gym.Space) -> bool:
    return isinstance(space, spaces.Box) and len(space.shape) == 3


def check_observation_space(space: gym.Space) -> None:
    if not isinstance(space, spaces.Box) or len(space.shape) not in (1, 3):
        raise SpaceError(
            f"DreamerV3 needs a 1-D Box (vector) or 3-D Box (image) observation space, got {space}. "
            "Flatten other spaces with the FlattenObservations env-to-module connector."
        )


def build_encoder(space: gym.Space, dims: ModelDims, symlog_obs: bool) -> nn.Module:
    check_observation_space(space)
    if is_image_space(space):
        return ImageEncoder(space.shape, dims, uint8=space.dtype == np.uint8)
    return VectorEncoder(int(space.shape[0]), dims, symlog_obs)


class RSSM(nn.Module):
    """Recurrent state-space model with categorical latents (see the module docstring)."""

    def __init__(self, embed_dim: int, action_dim: int, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        units, deter, stoch = dims.dense_units, dims.gru_units, dims.stoch_size
        # tanh(initial_deter) is h before an episode's first step (learned, as in the reference).
        self.initial_deter = nn.Parameter(torch.zeros(deter))
        # Input layer of the GRU over [z, a], split so the action part runs batched.
        self.in_z = nn.Linear(stoch, units, bias=False)
        self.in_action = nn.Linear(action_dim, units, bias=False)
        self.in_norm = nn.LayerNorm(units, eps=LAYER_NORM_EPS)
        self.gru = LayerNormGRUCell(units, deter)
        self.prior = nn.Sequential(NormDense(deter, units), nn.Linear(units, stoch))
        # Posterior's first layer over [h, embed], split so the embedding part runs batched.
        self.post_h = nn.Linear(deter, units, bias=False)
        self.post_embed = nn.Linear(embed_dim, units, bias=False)
        self.post_norm = nn.LayerNorm(units, eps=LAYER_NORM_EPS)
        self.post_out = nn.Linear(units, stoch)
        init_weights(self)

    # -- pieces ------------------------------------------------------------------------------
    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, z)`` before an episode's first step: ``tanh(initial_deter)`` and its prior's mode."""
        h = torch.tanh(self.initial_deter).unsqueeze(0)
        logits = self.latent_logits(self.prior(h))
        z = nn.functional.one_hot(logits.argmax(-1), self.dims.num_classes).to(h.dtype).flatten(-2)
        return h.expand(batch, -1), z.expand(batch, -1)

    def latent_logits(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.float().unflatten(-1, (self.dims.num_categoricals, self.dims.num_classes))

    def deter_step(self, h: torch.Tensor, z: torch.Tensor, action_in: torch.Tensor) -> torch.Tensor:
        """``h_t`` from ``h_{t-1}``, ``z_{t-1}`` and the projected action ``in_action(a_{t-1})``."""
        x = nn.functional.silu(self.in_norm(self.in_z(z) + action_in))
        return self.gru(x, h)

    def prior_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.latent_logits(self.prior(h))

    def posterior_logits(self, h: torch.Tensor, embed_in: torch.Tensor) -> torch.Tensor:
        x = nn.functional.silu(self.post_norm(self.post_h(h) + embed_in))
        return self.latent_logits(self.post_out(x))

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None, mode: bool = False
    ) -> torch.Tensor:
        """A flattened one-hot sample of ``[..., C, K]`` logits (1% unimix), straight-through.

        Sampling inverts each categorical's CDF with one uniform number per categorical (not one
        per class as Gumbel-max needs): with 32x32 latents over 1024 dream starts this is the
        hottest elementwise code of an update, and it measured ~7x cheaper on CPU.
        """
        classes = logits.shape[-1]
        probs = (1.0 - UNIMIX) * torch.softmax(logits, dim=-1) + UNIMIX / classes
        if mode:
            index = probs.argmax(-1, keepdim=True)
        else:
            uniform = torch.rand(
                (*probs.shape[:-1], 1), generator=generator, dtype=probs.dtype, device=probs.device
            )
            index = torch.searchsorted(probs.detach().cumsum(-1), uniform).clamp_max_(classes - 1)
        one_hot = torch.zeros_like(probs).scatter_(-1, index, 1.0)
        if torch.is_grad_enabled() and probs.requires_grad:
            one_hot = one_hot + probs - probs.detach()
        return one_hot.flatten(-2)

    # -- sequences -----------------------------------------------------------------------------
    def observe(
        self, embed: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Posterior states of ``[B, T]`` windows: ``(h, z, posterior_logits, prior_logits)``.

        A window's first step starts from the initial state like an episode start: the replay
        stores no RSSM state, and the posterior recovers it from the observations within a few
        steps.
        """
        b, t = is_first.shape
        embed_in = self.post_embed(embed)
        action_in = self.in_action(prev_action)
        h0, z0 = self.initial_state(b)
        reset = is_first.clone()
        reset[:, 0] = True
        hs, zs, post = [], [], []
        h, z = h0, z0
        for i in range(t):
            r = reset[:, i].unsqueeze(-1)
            h = torch.where(r, h0, h)
            z = torch.where(r, z0, z)
            a_in = action_in[:, i].masked_fill(r, 0.0)
            h = self.deter_step(h, z, a_in)
            logits = self.posterior_logits(h, embed_in[:, i])
            z = self.sample(logits)
            hs.append(h)
            zs.append(z)
            post.append(logits)
        h_all = torch.stack(hs, 1)
        return h_all, torch.stack(zs, 1), torch.stack(post, 1), self.prior_logits(h_all)

    def imagine(
        self, h: torch.Tensor, z: torch.Tensor, actor: nn.Module, horizon: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Roll ``horizon`` steps from ``[N]`` start states with the actor's sampled actions and
        the prior: ``(features [H+1, N, F], actions [H, N, A])``, index 0 = the start, where a
        state's features are ``[h, z]``.

        Without gradients the features are written straight into one buffer of the autocast
        dtype (bf16 under ``precision="bf16-mixed"``), so the heads that read all ``(H+1) N``
        states do not each convert or concatenate a ~20M-element tensor again.
        """
        if torch.is_grad_enabled():
            hs, zs, actions = [h], [z], []
            for _ in range(horizon):
                action, _, _ = actor.sample(torch.cat([h, z], -1))
                h = self.deter_step(h, z, self.in_action(action.to(h.dtype)))
                z = self.sample(self.prior_logits(h))
                hs.append(h)
                zs.append(z)
                actions.append(action)
            return torch.cat([torch.stack(hs), torch.stack(zs)], -1), torch.stack(actions)
        deter = h.shape[-1]
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else h.dtype
        if h.is_cuda and torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
        features = h.new_empty((horizon + 1, h.shape[0], deter + z.shape[-1]), dtype=dtype)
        features[0, :, :deter] = h
        features[0, :, deter:] = z
        actions = []
        for k in range(horizon):
            action, _, _ = actor.sample(features[k])
            h = self.deter_step(h, z, self.in_action(action.to(h.dtype)))
            z = self.sample(self.prior_logits(h))
            features[k + 1, :, :deter] = h
            features[k + 1, :, deter:] = z
            actions.append(action)
        return features, torch.stack(actions)


class WorldModel(nn.Module):
    """Encoder + RSSM + decoder + reward and continue heads, and their loss."""

    def __init__(
        self, observation_space: gym.Space, action_dim: int, dims: ModelDims, symlog_obs: bool
    ) -> None:
        super().__init__()
        self.dims = dims
        self.image = is_image_space(observation_space)
        self.symlog_obs = symlog_obs and not self.image
        self.encoder = build_encoder(observation_space, dims, self.symlog_obs)
        self.rssm = RSSM(self.encoder.out_dim, action_dim, dims)
        features = dims.feature_size
        if self.image:
            channels = self.encoder.preprocess(torch.zeros(1, *observation_space.shape)).shape[1]
            self.decoder = ImageDecoder(features, self.encoder, channels)
        else:
            self.decoder = VectorDecoder(features, int(observation_space.shape[0]), dims)
        self.reward_head = MLPHead(features, NUM_BINS, dims, zero_init=True)
        self.continue_head = MLPHead(features, 1, dims)
        self.two_hot = SymExpTwoHot(NUM_BINS)
        init_weights(self.encoder)
        init_weights(self.decoder)
        for head in (self.reward_head, self.continue_head):
            init_weights(head)
            head.reset_output()

    def decoder_target(self, obs: torch.Tensor) -> torch.Tensor:
        """What the decoder predicts: symlog(obs) for vectors, the encoder's scale for images."""
        if self.image:
            target = self.encoder.preprocess(obs)
            if self.encoder.channels_last:
                target = target.permute(0, 2, 3, 1)
            return target.reshape(*obs.shape[:-3], *target.shape[1:])
        obs = obs.float()
        return symlog(obs) if self.symlog_obs else obs

    def reward(self, features: torch.Tensor) -> torch.Tensor:
        return self.two_hot.decode(self.reward_head(features).float())

    def continue_probability(self, features: torch.Tensor) -> torch.Tensor:
        """The continue head's probability that the episode goes on.

        The paper's first reference implementation discounted dreams with the head's mode (0 or
        1); its 2024 revision uses the probability, as here: with the mode, a state counts as
        terminal only once the head is sure, so on CartPole (one terminal step in ~20 early on)
        every dream runs on forever and the actor sees no difference between its actions for
        thousands of updates; the probability ranks risky states from the first updates.
        """
        return torch.sigmoid(self.continue_head(features).float().squeeze(-1))

    def loss(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        reward: torch.Tensor,
        is_first: torch.Tensor,
        cont: torch.Tensor,
        *,
        free_bits: float,
        dyn_scale: float,
        rep_scale: float,
    ) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor, torch.Tensor]:
        """The paper's eq. 5 over ``[B, T]`` windows: prediction + dyn * KL-dyn + rep * KL-rep.

        Returns the loss, stats, and the posterior states ``(h, z)`` to imagine from.
        """
        embed = self.encoder(obs)
        h, z, post_logits, prior_logits = self.rssm.observe(embed, prev_action, is_first)
        features = torch.cat([h, z], -1)
        decoded = self.decoder(features).float()
        error = (decoded - self.decoder_target(obs)).pow(2)
        decoder_loss = error.reshape(*error.shape[:2], -1).sum(-1).mean()
        reward_loss = two_hot_cross_entropy(
            self.reward_head(features).float(), reward, self.two_hot.bins
        ).mean()
        continue_logits = self.continue_head(features).float().squeeze(-1)
        continue_loss = nn.functional.binary_cross_entropy_with_logits(continue_logits, cont)
        # KL balancing and free bits (torchrl implements the reference's split: the dynamics term
        # trains the prior towards the stopped posterior, the representation term the reverse,
        # each clipped below free_bits nats summed over the categoricals).
        dyn_loss, rep_loss = categorical_kl_terms(
            post_logits, prior_logits, free_nats=free_bits, unimix=UNIMIX
        )
        prediction_loss = decoder_loss + reward_loss + continue_loss
        total = prediction_loss + dyn_scale * dyn_loss + rep_scale * rep_loss
        stats = {
            "world_model_loss": total,
            "decoder_loss": decoder_loss,
            "reward_loss": reward_loss,
            "continue_loss": continue_loss,
            "dynamics_loss": dyn_loss,
            "representation_loss": rep_loss,
        }
        return total, stats, h, z
