"""The inference-only policy that EnvRunners build, and the networks shared with learners.

An algorithm describes its runner-side policy with a :class:`PolicySpec` (a class and plain
kwargs, cheap to pickle to Ray actors) and ships weights separately; the runner never sees the
learner's optimiser state, target networks or critics.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import torch
from gymnasium import spaces
from torch import nn

from lightning_rl.errors import SpaceError
from lightning_rl.modules.distributions import ActionDistribution, DiagGaussianDistribution, distribution_for
from lightning_rl.modules.encoders import build_encoder, build_head_hiddens, init_linear, mlp
from lightning_rl.modules.model_config import DefaultModelConfig, resolve_model_config

MASK_KEY = "action_mask"
MASKED_LOGIT = -1e9  # exp() underflows to exactly 0, while log-probs and entropy stay finite


OBSERVATION_KEYS = ("observation", "observations")  # lightning-rl/PettingZoo's, RLlib's examples'


def observation_key(observation_space: gym.Space) -> str | None:
    """The key of the observation next to an ``action_mask`` (None: no mask in this space).

    PettingZoo's classic games use ``"observation"``, RLlib's action-masking examples
    ``"observations"``; both work unchanged.
    """
    if not (isinstance(observation_space, spaces.Dict) and MASK_KEY in observation_space.spaces):
        return None
    for key in OBSERVATION_KEYS:
        if key in observation_space.spaces:
            return key
    raise SpaceError(
        f"An observation space with an {MASK_KEY!r} needs an 'observation' (or RLlib's 'observations') "
        f"key too, got {list(observation_space.spaces)}."
    )


def split_action_mask(observation_space: gym.Space) -> tuple[gym.Space, bool]:
    """``Dict(observation=..., action_mask=...)`` -> (the observation part, True); else (space, False).

    PettingZoo's classic games (and lightning-rl's TicTacToe) put the legal actions next to
    the observation; the networks encode ``observation`` and mask their logits with the rest.
    """
    key = observation_key(observation_space)
    if key is None:
        return observation_space, False
    return observation_space[key], True


def apply_action_mask(values: torch.Tensor, obs: Any) -> torch.Tensor:
    """Logits or Q-values ``[..., A]`` with illegal actions (``obs["action_mask"] == 0``) pushed to
    :data:`MASKED_LOGIT`: never sampled, never the argmax, yet finite (no NaN in losses).

    One implementation for every policy that reads masks (policy nets, Q-networks, random
    opponents, memory models), single- and multi-agent alike.
    """
    return values.masked_fill(obs[MASK_KEY] == 0, MASKED_LOGIT)


class PolicyNet(nn.Module):
    """observation -> distribution parameters (logits, or loc and scale); masks illegal actions."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig | dict | None = None,
    ) -> None:
        super().__init__()
        config = resolve_model_config(model_config)
        self.distribution: ActionDistribution = distribution_for(action_space)
        self.obs_key = observation_key(observation_space)
        observation_space, self.masked = split_action_mask(observation_space)
        if self.masked and not isinstance(action_space, spaces.Discrete):
            raise SpaceError(f"Action masks need a Discrete action space, got {action_space}.")
        self.encoder = build_encoder(observation_space, config)
        self.head_hiddens, width = build_head_hiddens(self.encoder.out_dim, config)
        self.continuous = isinstance(self.distribution, DiagGaussianDistribution)
        self.free_log_std = config.free_log_std
        head_init = config.layer_init("head_fcnet")
        if self.continuous:
            dim = self.distribution.dim
            out = dim if config.free_log_std else 2 * dim
            self.head = init_linear(nn.Linear(width, out), 0.01, config.orthogonal_init, head_init)
            if config.free_log_std:
                self.log_std = nn.Parameter(torch.full((dim,), float(config.log_std_init)))
        else:
            self.head = init_linear(
                nn.Linear(width, self.distribution.n), 0.01, config.orthogonal_init, head_init
            )

    def forward(self, obs: Any) -> tuple[torch.Tensor, ...]:
        if self.masked:
            out = self.head(self.head_hiddens(self.encoder(obs[self.obs_key])))
            return (apply_action_mask(out, obs),)
        out = self.head(self.head_hiddens(self.encoder(obs)))
        if not self.continuous:
            return (out,)
        if self.free_log_std:
            loc, log_std = out, self.log_std.expand_as(out)
        else:
            loc, log_std = out.chunk(2, dim=-1)
        return loc, log_std.clamp(-20.0, 2.0).exp()


class ValueNet(nn.Module):
    """observation -> state value; shares the policy's encoder when ``shared_encoder`` is given."""

    def __init__(
        self,
        observation_space: gym.Space,
        model_config: DefaultModelConfig | dict | None = None,
        shared_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        config = resolve_model_config(model_config)
        # Keys of a (one-level) Dict observation, for callers that pass it leaf by leaf.
        self.leaf_keys = (
            list(observation_space.spaces)
            if isinstance(observation_space, spaces.Dict)
            and not any(isinstance(sub, spaces.Dict) for sub in observation_space.spaces.values())
            else None
        )
        self.obs_key = observation_key(observation_space)
        observation_space, self.masked = split_action_mask(observation_space)
        self.encoder = (
            shared_encoder if shared_encoder is not None else build_encoder(observation_space, config)
        )
        width = self.encoder.out_dim
        head_init = config.layer_init("head_fcnet")
        self.head = nn.Sequential(
            mlp(
                width,
                config.head_fcnet_hiddens,
                config.fcnet_activation,
                orthogonal=config.orthogonal_init,
                init=head_init,
            ),
            init_linear(
                nn.Linear(int(config.head_fcnet_hiddens[-1]) if config.head_fcnet_hiddens else width, 1),
                1.0,
                config.orthogonal_init,
                head_init,
            ),
        )

    def forward(self, obs: Any, *more_leaves: torch.Tensor) -> torch.Tensor:
        if self.leaf_keys is not None and isinstance(obs, torch.Tensor):
            obs = dict(zip(self.leaf_keys, (obs, *more_leaves), strict=True))
        return self.head(self.encoder(obs[self.obs_key] if self.masked else obs))


class InferencePolicy(nn.Module, abc.ABC):
    """What an EnvRunner calls once per env step for all its env copies at once.

    ``forward(obs, explore, generator)`` returns a dict with at least ``"action"``; extra
    entries (``"action_log_prob"``) are stored with the rollout. ``set_extra`` receives
    non-weight state from the learner (e.g. DQN's current epsilon).
    """

    @abc.abstractmethod
    def forward(
        self, obs: torch.Tensor, explore: bool = True, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]: ...

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(weights)

    def set_extra(self, extra: dict[str, Any]) -> None:
        """Receive non-weight state from the learner (default: nothing to do)."""

    # Recurrent policies keep one hidden state per env copy (row) and return what the learner
    # needs as extra forward outputs, which the runner stores with the rollout. EnvRunners and
    # lightning_rl.Policy call these two at the same moments as the connectors' own.
    def reset(self, num_envs: int) -> None:
        """Allocate per-env recurrent state for ``num_envs`` env copies (stateless: nothing)."""

    def episode_start(self, env_ids: torch.Tensor) -> None:
        """Reset the recurrent state of env copies whose episode starts (stateless: nothing)."""

    # A policy that keeps state across steps must say so: an exported artifact is a pure
    # function, so it either takes the state as an input and returns the next one (a policy
    # with ``export_state_size``/``export_step``) or export refuses instead of writing an
    # artifact that acts as if every step began an episode.
    keeps_episode_state: ClassVar[bool] = False
    export_state_size: int | None = None

    def export_step(self, obs: Any, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy ``(action, next state)`` as a pure function of the inputs (stateful policies)."""
        raise NotImplementedError


class StochasticPolicy(InferencePolicy):
    """Samples from a :class:`PolicyNet`'s distribution (PPO, IMPALA, APPO, BC, MARWIL)."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig | dict | None = None,
    ) -> None:
        super().__init__()
        self.net = PolicyNet(observation_space, action_space, model_config)

    def forward(self, obs, explore=True, generator=None):
        params = self.net(obs)
        distribution = self.net.distribution
        if explore:
            action, log_prob = distribution.sample(params, generator)
        else:
            action = distribution.mode(params)
            log_prob = distribution.log_prob(params, action)
        return {"action": action, "action_log_prob": log_prob}

    def load_weights(self, weights):
        self.net.load_state_dict(weights)


@dataclass
class PolicySpec:
    """A picklable recipe for the inference policy: a class and plain constructor kwargs."""

    policy_class: type[InferencePolicy]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> InferencePolicy:
        # Built outside inference mode even when first needed inside Lightning's validate():
        # inference-mode parameters could never take new weights in a later train().
        with torch.inference_mode(False):
            policy = self.policy_class(**self.kwargs)
        policy.eval()
        for parameter in policy.parameters():
            parameter.requires_grad_(False)
        return policy
