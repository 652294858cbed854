"""An RLModule (RLlib's custom-model surface) as one policy's behaviour-cloning network.

``BCConfig().rl_module(rl_module_spec=RLModuleSpec(module_class=MyBCModel))``, as RLlib's
offline examples write it: the module's ``forward_train`` gives ``ACTION_DIST_INPUTS`` and the
loss is BC's (:func:`~lightning_rl.algorithms.marwil.loss.behaviour_cloning_loss`: the negative
log-likelihood of the recorded actions); the runners (evaluation) act with
:class:`~lightning_rl.modules.rl_module.RLModuleInferencePolicy`. Advantage weighting
(MARWIL's ``beta > 0``) needs a value function the module does not promise, so it is refused;
BC's optional critic (``vf_coeff > 0``) is not trained for an RLModule (as in RLlib, whose BC
loss has no value term).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDict

from lightning_rl.algorithms.marwil.loss import (
    MARWIL_KEYS,
    MARWILLossConfig,
    behaviour_cloning_loss,
    log_likelihood,
)
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.errors import ConfigError
from lightning_rl.modules.distributions import DiagGaussianDistribution, distribution_for
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicySpec
from lightning_rl.modules.rl_module import (
    Columns,
    RLModule,
    RLModuleSpec,
    UserRLModule,
    action_dist_inputs,
    distribution_params,
)


class RLModuleBCModule(PolicyModule):
    """One policy's behaviour cloning around a user's RLModule (see the module docstring)."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        spec: RLModuleSpec,
        loss_config: MARWILLossConfig,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        if loss_config.beta > 0.0:
            raise ConfigError(
                f"MARWIL with beta={loss_config.beta} weights by advantages, which needs a value function; "
                "an rl_module_spec runs with BC (beta=0, vf_coeff=0) only."
            )
        built = UserRLModule.build(spec, observation_space, action_space, model_config)
        self.user_module = built  # the module's class, config and spaces, as the spec resolved them
        self.rl_module: RLModule = built.module
        self.distribution_spec = distribution_for(built.action_space)
        self.loss_config = loss_config

    def policy_spec(self) -> PolicySpec:
        return self.user_module.policy_spec()

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.rl_module.state_dict()

    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, Any]]:
        keys = MARWIL_KEYS
        out = self.rl_module.forward_train({Columns.OBS: batch[keys.observation]})
        dist_inputs = action_dist_inputs(self.rl_module, out, "BC")
        params = distribution_params(self.distribution_spec, dist_inputs)
        log_prob = self.distribution_spec.log_prob(params, batch[keys.action])
        log_std = params[1].log() if isinstance(self.distribution_spec, DiagGaussianDistribution) else None
        stats = behaviour_cloning_loss(log_likelihood(log_prob, log_std, self.loss_config))
        return stats["total_loss"], stats
