"""An RLModule (RLlib's custom-model surface) as one policy's IMPALA or APPO networks.

``IMPALAConfig().rl_module(rl_module_spec=RLModuleSpec(module_class=MyModule))`` (APPO alike,
or a :class:`~lightning_rl.modules.rl_module.MultiRLModuleSpec` per policy id) makes the
user's module the policy and the critic, as RLlib's IMPALA and APPO learners use it:

* the runners act with :class:`~lightning_rl.modules.rl_module.RLModuleInferencePolicy`
  (``forward_exploration``/``forward_inference``), which records the behaviour log-probs that
  V-trace corrects with;
* the learner calls the module once per minibatch of ``[rows, T]`` sequences, flattened to one
  batch dim as RLlib's modules expect: values from ``compute_values`` (RLlib's
  ``ValueFunctionAPI``) first, then ``forward_train``'s ``ACTION_DIST_INPUTS`` (and its
  ``Columns.VF_PREDS``, which take the place of ``compute_values`` where a module returns them);
* truncated sequences bootstrap from the values of their true next observations;
* APPO's target policy is a copy of the module (:class:`ModulePolicyHead` is what
  ``policy_network()`` returns, so the target's forward and its updates need nothing more).

The mixin :class:`RLModuleNetworks` replaces ``ImpalaModule``'s network group
(``build_networks`` to ``policy_spec``) and keeps its loss, as ``RecurrentNetworks`` does for
memory models (``RLModuleImpalaModule`` and ``RLModuleAPPOModule`` combine them). A stateful
module is refused: IMPALA replays recurrent fragments from stored states through lightning-rl's
own memory networks (``model_config`` ``use_lstm``/``use_gru``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDict
from torch import nn

from lightning_rl.algorithms.impala.loss import IMPALA_KEYS
from lightning_rl.errors import ConfigError
from lightning_rl.modules.distributions import ActionDistribution, distribution_for
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicySpec
from lightning_rl.modules.rl_module import (
    Columns,
    RLModule,
    RLModuleSpec,
    UserRLModule,
    action_dist_inputs,
    distribution_params,
    flat_observations,
    module_values,
    observation_leaf_spaces,
    tensor_tree,
    train_outputs_and_values,
)

ALGORITHMS = "IMPALA/APPO"  # named in the errors about a module's outputs


class ModulePolicyHead(nn.Module):
    """A user's RLModule as IMPALA's policy network: observations of any leading shape in,
    distribution parameters (and values) of the same leading shape out."""

    def __init__(
        self,
        rl_module: RLModule,
        distribution: ActionDistribution,
        observation_space: gym.Space,
        leaf_spaces: dict[str, gym.Space] | None,
    ) -> None:
        super().__init__()
        self.rl_module = rl_module
        self.distribution = distribution
        self.observation_space = observation_space
        self.leaf_spaces = leaf_spaces

    def _module_batch(self, obs: Any) -> tuple[dict[str, Any], torch.Size]:
        flat, lead = flat_observations(obs, self.leaf_spaces, self.observation_space)
        return {Columns.OBS: tensor_tree(flat)}, lead

    def _params(self, out: dict[str, Any], lead: torch.Size) -> tuple[torch.Tensor, ...]:
        dist_inputs = action_dist_inputs(self.rl_module, out, ALGORITHMS)
        params = distribution_params(self.distribution, dist_inputs)
        return tuple(p.reshape(*lead, *p.shape[1:]) for p in params)

    def forward(self, obs: Any) -> tuple[torch.Tensor, ...]:
        """Distribution parameters of ``obs`` (``[*lead, ...]`` -> ``[*lead, ...]``)."""
        batch, lead = self._module_batch(obs)
        return self._params(self.rl_module.forward_train(batch), lead)

    def params_and_values(self, obs: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Distribution parameters and values ``[*lead, 1]`` (RLlib's order, see
        :func:`~lightning_rl.modules.rl_module.train_outputs_and_values`)."""
        batch, lead = self._module_batch(obs)
        out, values = train_outputs_and_values(self.rl_module, batch, ALGORITHMS)
        return self._params(out, lead), values.reshape(*lead, 1)

    def values(self, obs: Any) -> torch.Tensor:
        """Values ``[*lead, 1]`` of ``obs`` (``compute_values``, else ``forward_train``'s VF_PREDS)."""
        batch, lead = self._module_batch(obs)
        return module_values(self.rl_module, batch, ALGORITHMS).reshape(*lead, 1)


class RLModuleNetworks:
    """IMPALA's network group over a user's RLModule (mix in before :class:`ImpalaModule`)."""

    #: The algorithm named in error messages.
    algorithm_name = "IMPALA"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        spec: RLModuleSpec,
        **kwargs: Any,
    ) -> None:
        # Read by build_networks, which ImpalaModule.__init__ calls (a plain attribute may be
        # set before nn.Module.__init__).
        self.rl_module_spec = spec
        super().__init__(observation_space, action_space, model_config, **kwargs)  # type: ignore[call-arg]

    def build_networks(self) -> None:
        built = UserRLModule.build(
            self.rl_module_spec, self.observation_space, self.action_space, self.model_config
        )
        if built.module.is_stateful():
            raise ConfigError(
                f"{self.algorithm_name} runs stateless RLModules only; {built.module_class.__name__} has a "
                "state (get_initial_state). For a memory model use model_config use_lstm/use_gru instead."
            )
        self.user_module = built
        self.policy_net = ModulePolicyHead(
            built.module,
            distribution_for(built.action_space),
            self.observation_space,
            observation_leaf_spaces(self.observation_space, self.algorithm_name),
        )

    @property
    def rl_module(self) -> RLModule:
        return self.policy_net.rl_module

    def policy_network(self) -> nn.Module:
        return self.policy_net

    @property
    def distribution_spec(self) -> ActionDistribution:
        return self.policy_net.distribution

    def policy_and_value(self, obs: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        return self.policy_net.params_and_values(obs)

    def bootstrap_values(self, rows: TensorDict) -> torch.Tensor:
        return self.policy_net.values(rows[IMPALA_KEYS.next_observation])

    def policy_spec(self) -> PolicySpec:
        return self.user_module.policy_spec()

    def policy_weights(self) -> dict[str, torch.Tensor]:
        # The runners' RLModuleInferencePolicy holds the bare module, so its keys, not the head's.
        return self.rl_module.state_dict()
