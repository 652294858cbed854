"""An RLModule (RLlib's custom-model surface) as one policy's PPO networks.

``config.rl_module(rl_module_spec=RLModuleSpec(module_class=MyModule, ...))`` (or a
:class:`~lightning_rl.modules.rl_module.MultiRLModuleSpec` with one spec per policy id) makes
:class:`RLModulePPOModule` that policy's :class:`~lightning_rl.algorithms.policy_module.PolicyModule`:

* the runners act with :class:`~lightning_rl.modules.rl_module.RLModuleInferencePolicy`
  (``forward_exploration``/``forward_inference``), loaded with the module's weights;
* GAE (torchrl's) reads values from ``compute_values`` (RLlib's ``ValueFunctionAPI``) or from
  ``Columns.VF_PREDS`` of ``forward_train``;
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
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.modules import ValueOperator
from torchrl.objectives.value import GAE

from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.algorithms.ppo.loss import PPO_KEYS, PPOLossConfig, ppo_loss_for_batch
from lightning_rl.errors import ConfigError
from lightning_rl.modules.distributions import distribution_for
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicySpec
from lightning_rl.modules.rl_module import (
    Columns,
    RandomRLModule,
    RLModule,
    RLModuleInferencePolicy,
    RLModuleSpec,
    check_rl_module_action_space,
    distribution_params,
    module_class_reference,
    module_model_config,
    resolve_module_class,
)


def _tensor_tree(value: Any) -> Any:
    """A TensorDict (a Dict observation) as plain nested dicts, which users' modules expect."""
    if isinstance(value, TensorDictBase):
        return {k: _tensor_tree(v) for k, v in value.items()}
    return value


class _ValuesOf(nn.Module):
    """The module's values as a network GAE can call: the observation's leaves in (torchrl scans
    inputs with ``torch.isnan``, which a whole TensorDict fails), ``[..., 1]`` out. GAE passes
    ``[num_envs, T, ...]``; users' modules (like RLlib's) expect one batch dim, so the leading
    dims are flattened on the way in and restored on the way out."""

    def __init__(
        self, owner: RLModulePPOModule, leaf_spaces: dict[str, gym.Space] | None, space: gym.Space
    ) -> None:
        super().__init__()
        self._owner = [owner]  # not a submodule: its parameters are the owner's
        self.leaf_spaces = leaf_spaces
        self.space = space

    def forward(self, *leaves: torch.Tensor) -> torch.Tensor:
        if self.leaf_spaces:
            first_space = next(iter(self.leaf_spaces.values()))
            lead = leaves[0].shape[: leaves[0].dim() - len(first_space.shape)]
            obs: Any = {
                key: leaf.reshape(-1, *space.shape)
                for (key, space), leaf in zip(self.leaf_spaces.items(), leaves, strict=True)
            }
        else:
            lead = leaves[0].shape[: leaves[0].dim() - len(self.space.shape)]
            obs = leaves[0].reshape(-1, *self.space.shape)
        return self._owner[0].values({Columns.OBS: obs}).reshape(*lead, 1)


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
        check_rl_module_action_space(action_space)
        self.module_class = resolve_module_class(spec.module_class)
        self.module_config = module_model_config(spec, model_config)
        self.module_spaces = (
            spec.observation_space or observation_space,
            spec.action_space or action_space,
        )
        self.rl_module: RLModule = RLModuleSpec(
            module_class=self.module_class,
            observation_space=self.module_spaces[0],
            action_space=self.module_spaces[1],
            model_config=self.module_config,
            load_state_path=spec.load_state_path,
        ).build()
        self.distribution_spec = distribution_for(self.module_spaces[1])
        self.loss_config = loss_config
        self.trainable = not isinstance(self.rl_module, RandomRLModule) and any(
            p.requires_grad for p in self.rl_module.parameters()
        )
        self.has_compute_values = callable(getattr(self.rl_module, "compute_values", None))
        obs = PPO_KEYS.observation
        if isinstance(observation_space, gym.spaces.Dict):
            leaves = dict(observation_space.spaces)
            if any(isinstance(s, gym.spaces.Dict | gym.spaces.Tuple) for s in leaves.values()):
                raise ConfigError(
                    f"RLModules with PPO take a flat Dict observation here, got {observation_space}."
                )
        else:
            leaves = None
        in_keys = [(obs, key) for key in leaves] if leaves else [obs]
        self.critic = ValueOperator(
            _ValuesOf(self, leaves, observation_space), in_keys=in_keys, out_keys=[PPO_KEYS.old_value]
        )
        self.gae = GAE(gamma=gamma, lmbda=lambda_, value_network=self.critic, average_gae=False)
        self.gae.set_keys(
            advantage=PPO_KEYS.advantage, value_target=PPO_KEYS.value_target, value=PPO_KEYS.old_value
        )
        self.register_buffer("entropy_coeff", torch.tensor(float(entropy_coeff)), persistent=False)
        self.register_buffer("kl_coeff", torch.tensor(float(kl_coeff)))

    # -- what the runners run ------------------------------------------------------------------
    def policy_spec(self) -> PolicySpec:
        return PolicySpec(
            RLModuleInferencePolicy,
            {
                "module_class": module_class_reference(self.module_class),
                "observation_space": self.module_spaces[0],
                "action_space": self.module_spaces[1],
                "model_config": self.module_config,
            },
        )

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.rl_module.state_dict()

    # -- learning ------------------------------------------------------------------------------
    def values(self, batch: dict[str, Any]) -> torch.Tensor:
        """``[B, 1]`` values of ``batch`` (``compute_values``, else ``forward_train``'s VF_PREDS)."""
        if self.has_compute_values:
            values = self.rl_module.compute_values(batch)
        else:
            values = self.rl_module.forward_train(batch).get(Columns.VF_PREDS)
            if values is None:
                raise ConfigError(
                    f"PPO needs values from {type(self.rl_module).__name__}: implement compute_values "
                    f"(ValueFunctionAPI) or return {Columns.VF_PREDS!r} from _forward_train."
                )
        return values.reshape(-1, 1)

    def process_rollout(self, batch: TensorDict) -> TensorDict:
        """GAE over the whole ``[num_envs, T]`` batch with the module's current values."""
        return self.gae(batch) if self.trainable else batch

    def distribution(self, params: tuple[torch.Tensor, ...]) -> torch.distributions.Distribution:
        spec = self.distribution_spec
        return spec.torch_distribution_class()(
            **dict(zip(spec.param_keys, params, strict=True)), **spec.torch_distribution_kwargs()
        )

    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, Any]]:
        keys = PPO_KEYS
        module_batch = {
            Columns.OBS: _tensor_tree(batch[keys.observation]),
            Columns.ACTIONS: batch[keys.action],
            Columns.ACTION_LOGP: batch[keys.old_log_prob],
        }
        # RLlib's order: values first (its GAE connector's pass over the same batch), then forward_train.
        values = self.values(module_batch) if self.has_compute_values else None
        out = self.rl_module.forward_train(module_batch)
        if Columns.VF_PREDS in out:
            values = out[Columns.VF_PREDS].reshape(-1, 1)
        if values is None:
            values = self.values(module_batch)
        if Columns.ACTION_DIST_INPUTS not in out:
            raise ConfigError(
                f"{type(self.rl_module).__name__}._forward_train must return {Columns.ACTION_DIST_INPUTS!r} "
                f"for PPO; it returned keys {sorted(out)}."
            )
        dist = self.distribution(distribution_params(self.distribution_spec, out[Columns.ACTION_DIST_INPUTS]))
        terms = ppo_loss_for_batch(
            batch,
            dist,
            values,
            self.loss_config,
            entropy_coeff=self.entropy_coeff,
            kl_coeff=self.kl_coeff,
        )
        return terms.total_loss, terms.stats()
