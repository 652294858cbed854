"""Action distributions with one fast sampling path for runners and one torch path for losses.

EnvRunners sample once per env step, so they use a few raw tensor ops (Gumbel-max sampling,
``log_softmax``) instead of building a ``torch.distributions`` object per step (measured ~40%
cheaper per step). Learners need real distribution objects for torchrl's losses; both paths
compute the same log-probabilities, which the tests check.
"""

from __future__ import annotations

import abc
import math

import gymnasium as gym
import torch
from gymnasium import spaces

from lightning_rl.errors import SpaceError

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class ActionDistribution(abc.ABC):
    """Maps network outputs to actions for one action space."""

    param_keys: tuple[str, ...] = ()

    @abc.abstractmethod
    def sample(
        self, params: tuple[torch.Tensor, ...], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abc.abstractmethod
    def mode(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor: ...

    @abc.abstractmethod
    def log_prob(self, params: tuple[torch.Tensor, ...], action: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def torch_distribution_class(self) -> type: ...

    def torch_distribution_kwargs(self) -> dict:
        return {}


class CategoricalDistribution(ActionDistribution):
    """Discrete actions; an optional ``action_mask`` (1 = legal) removes illegal actions."""

    param_keys = ("logits",)

    def __init__(self, n: int, start: int = 0) -> None:
        self.n = n
        self.start = start

    def sample(self, params, generator=None):
        (logits,) = params
        log_probs = torch.log_softmax(logits, dim=-1)
        noise = torch.empty_like(logits).exponential_(generator=generator).log_()
        action = (log_probs - noise).argmax(dim=-1)
        return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)

    def mode(self, params):
        return params[0].argmax(dim=-1)

    def log_prob(self, params, action):
        return torch.log_softmax(params[0], dim=-1).gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def torch_distribution_class(self) -> type:
        return torch.distributions.Categorical


class DiagGaussianDistribution(ActionDistribution):
    """Unsquashed diagonal Gaussian; actions are mapped to the env's bounds by connectors."""

    param_keys = ("loc", "scale")

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def sample(self, params, generator=None):
        loc, scale = params
        noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype)
        action = loc + scale * noise
        log_prob = (-0.5 * noise.pow(2) - scale.log() - _LOG_SQRT_2PI).sum(-1)
        return action, log_prob

    def mode(self, params):
        return params[0]

    def log_prob(self, params, action):
        loc, scale = params
        z = (action - loc) / scale
        return (-0.5 * z.pow(2) - scale.log() - _LOG_SQRT_2PI).sum(-1)

    def torch_distribution_class(self) -> type:
        from torchrl.modules.distributions import IndependentNormal

        return IndependentNormal

    def torch_distribution_kwargs(self) -> dict:
        return {"tanh_loc": False}


def distribution_for(action_space: gym.Space) -> ActionDistribution:
    """The default distribution of an action space (Discrete -> categorical, Box -> Gaussian)."""
    if isinstance(action_space, spaces.Discrete):
        return CategoricalDistribution(int(action_space.n), int(action_space.start))
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return DiagGaussianDistribution(int(action_space.shape[0]))
    raise SpaceError(
        f"Action space {action_space} is not supported: use Discrete or a 1-D Box (flatten other Box "
        "shapes with a gymnasium wrapper)."
    )
