"""One policy's learner-side networks and learner connector (RLlib's RLModule).

An algorithm builds one :class:`PolicyModule` per policy id (single-agent: just
``"default_policy"``), from that policy's module-side spaces. The module says what the
EnvRunners run for it (:meth:`policy_spec`, :meth:`policy_weights`, :meth:`policy_extra`) and
post-processes its share of each sampled batch (:meth:`process_rollout`); the algorithm's
``training_step`` combines the modules' losses. Several agents mapped to one policy id share
one module.
"""

from __future__ import annotations

import abc
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicySpec


class PolicyModule(nn.Module, abc.ABC):
    """Base class; subclasses build their networks in ``__init__``."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
    ) -> None:
        super().__init__()
        self.observation_space = observation_space
        self.action_space = action_space
        self.model_config = model_config

    @abc.abstractmethod
    def policy_spec(self) -> PolicySpec:
        """The recipe of the inference-only policy built in every EnvRunner."""

    def runner_policy_spec(self, policy_class: type) -> PolicySpec:
        """A :meth:`policy_spec` for the usual runner policy: one built from this module's
        observation space, action space and model config (plain data, so it pickles to Ray)."""
        return PolicySpec(
            policy_class,
            {
                "observation_space": self.observation_space,
                "action_space": self.action_space,
                "model_config": self.model_config.to_dict(),
            },
        )

    @abc.abstractmethod
    def policy_weights(self) -> dict[str, torch.Tensor]:
        """The weights to load into the policy built from :meth:`policy_spec`."""

    def policy_extra(self) -> dict[str, Any]:
        """Non-weight state the runner's policy needs (e.g. an exploration epsilon)."""
        return {}

    def process_rollout(self, batch: Any) -> Any:
        """Learner connector over this policy's whole sampled batch (GAE, n-step, ...)."""
        return batch

    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """RLlib's ``RLModule.get_state``: a copy of the weights (tensors only), what
        ``algorithm.set_state`` takes back (RLlib's self-play callback copies modules so)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`get_state`'s tensors (every key, same shapes)."""
        self.load_state_dict(dict(state))
