"""An RLModule (RLlib's custom-model surface) as one policy's PPO networks.

``config.rl_module(rl_module_spec=RLModuleSpec(module_class=MyModule, ...))`` (or a
:class:`~lightning_rl.modules.rl_module.MultiRLModuleSpec` with one spec per policy id) makes
:class:`RLModulePPOModule` that policy's :class:`~lightning_rl.algorithms.policy_module.PolicyModule`:

* the runners act with :class:`~lightning_rl.modules.rl_module.RLModuleInferencePolicy`
  (``forward_exploration``/``forward_inference``), loaded with the module's weights;
* GAE (:mod:`lightning_rl.algorithms.ppo.gae`) reads values from ``compute_values`` (RLlib's
  ``ValueFunctionAPI``) or from ``Columns.VF_PREDS`` of ``forward_train``;
* the loss is PPO's (:mod:`lightning_rl.algorithms.ppo.loss`) over ``forward_train``'s
  ``ACTION_DIST_INPUTS`` and those values.

The learner calls the module in RLlib's order: ``compute_values`` on the train batch first (in
RLlib the GAE connector does so on the same batch, and modules such as RLlib's action-masking
example rely on what it leaves in the batch), then ``forward_train``. A module without
parameters (:class:`~lightning_rl.modules.rl_module.RandomRLModule`) is a frozen policy.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDict

from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.algorithms.ppo.gae import add_advantages
from lightning_rl.algorithms.ppo.legacy_state import drop_legacy_loss_state
from lightning_rl.algorithms.ppo.loss import PPO_KEYS, PPOLossConfig, ppo_loss_for_batch
from lightning_rl.modules.distributions import distribution_for
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicySpec
from lightning_rl.modules.rl_module import (
    Columns,
    RandomRLModule,
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


class RLModulePPOModule(PolicyModule):
    """One policy's PPO learner around a user's RLModule (see the module docstring)."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        spec: RLModuleSpec,
        gamma: float,
        lambda_: float,
        loss_config: PPOLossConfig,
        entropy_coeff: float,
        kl_coeff: float,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        built = UserRLModule.build(spec, observation_space, action_space, model_config)
        self.user_module = built  # the module's class, config and spaces, as the spec resolved them
        self.rl_module: RLModule = built.module
        self.distribution_spec = distribution_for(built.action_space)
        self.loss_config = loss_config
        self.trainable = not isinstance(self.rl_module, RandomRLModule) and any(
            p.requires_grad for p in self.rl_module.parameters()
        )
        self.leaf_spaces = observation_leaf_spaces(observation_space, "PPO")
        self.gamma, self.lambda_ = float(gamma), float(lambda_)
        # Checkpoints from before GAE was a function held torchrl's GAE buffers (gae.*).
        self.register_load_state_dict_pre_hook(drop_legacy_loss_state)
        self.register_buffer("entropy_coeff", torch.tensor(float(entropy_coeff)), persistent=False)
        self.register_buffer("kl_coeff", torch.tensor(float(kl_coeff)))

    # -- what the runners run ------------------------------------------------------------------
    def policy_spec(self) -> PolicySpec:
        return self.user_module.policy_spec()

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.rl_module.state_dict()

    # -- learning ------------------------------------------------------------------------------
    def values(self, batch: dict[str, Any]) -> torch.Tensor:
        """``[B, 1]`` values of ``batch`` (``compute_values``, else ``forward_train``'s VF_PREDS)."""
        return module_values(self.rl_module, batch, "PPO").reshape(-1, 1)

    def values_of_observations(self, observation: Any) -> torch.Tensor:
        """``[num_envs, T, 1]`` values of ``[num_envs, T, ...]`` observations."""
        flat, lead = flat_observations(observation, self.leaf_spaces, self.observation_space)
        return self.values({Columns.OBS: flat}).reshape(*lead, 1)

    def process_rollout(self, batch: TensorDict) -> TensorDict:
        """GAE over the whole ``[num_envs, T]`` batch with the module's current values."""
        if not self.trainable:
            return batch
        keys = PPO_KEYS
        with torch.no_grad():
            value = self.values_of_observations(batch[keys.observation])
            next_value = self.values_of_observations(batch["next", keys.observation])
        return add_advantages(batch, value, next_value, self.gamma, self.lambda_)

    def distribution(self, params: tuple[torch.Tensor, ...]) -> torch.distributions.Distribution:
        spec = self.distribution_spec
        return spec.torch_distribution_class()(
            **dict(zip(spec.param_keys, params, strict=True)), **spec.torch_distribution_kwargs()
        )

    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, Any]]:
        keys = PPO_KEYS
        module_batch = {
            Columns.OBS: tensor_tree(batch[keys.observation]),
            Columns.ACTIONS: batch[keys.action],
            Columns.ACTION_LOGP: batch[keys.old_log_prob],
        }
        out, values = train_outputs_and_values(self.rl_module, module_batch, "PPO")
        values = values.reshape(-1, 1)
        dist_inputs = action_dist_inputs(self.rl_module, out, "PPO")
        dist = self.distribution(distribution_params(self.distribution_spec, dist_inputs))
        terms = ppo_loss_for_batch(
            batch,
            dist,
            values,
            self.loss_config,
            entropy_coeff=self.entropy_coeff,
            kl_coeff=self.kl_coeff,
        )
        return terms.total_loss, terms.stats()
