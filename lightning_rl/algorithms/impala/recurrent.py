"""IMPALA and APPO with a memory core (``use_lstm``, ``use_gru`` or ``use_attention``).

The runners act with the same :class:`RecurrentStochasticPolicy` as recurrent PPO and store,
with every step, the state they acted from (``recurrent_state``) and the state after the step
(``next_recurrent_state``). A minibatch of the asynchronous DataModule is whole ``[rows, T]``
fragments (V-trace runs along time), so the loss replays each fragment with the current weights
in ``max_seq_len`` chunks, each from the stored state of its first step, resetting the state at
``is_init`` steps (:meth:`RecurrentActorCritic.replay`). Replaying with the weights the runner
had reproduces its log-probabilities exactly; fragments are never padded, so no step is masked.

V-trace needs ``V`` at every step and at the step after each fragment's end and each truncated
episode's true final observation: the former come from the replay, the latter from one step of
the current network from the stored ``next_recurrent_state`` (the state the next fragment's
replay starts from, too).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from lightning_rl.modules.distributions import ActionDistribution
from lightning_rl.modules.policy_networks import PolicySpec
from lightning_rl.modules.recurrent import RecurrentActorCritic, RecurrentStochasticPolicy


class RecurrentNetworks:
    """The network hooks of :class:`~lightning_rl.algorithms.impala.ImpalaModule` for a recurrent
    actor-critic (one shared trunk, as recurrent PPO). Mixed in before ``ImpalaModule`` or
    ``APPOModule``, so both losses stay exactly as they are and only where their parameters and
    values come from changes."""

    model: RecurrentActorCritic

    def build_networks(self) -> None:
        self.model = RecurrentActorCritic(self.observation_space, self.action_space, self.model_config)

    def policy_network(self) -> nn.Module:
        return self.model

    @property
    def distribution_spec(self) -> ActionDistribution:
        return self.model.distribution

    def policy_spec(self) -> PolicySpec:
        return RecurrentStochasticPolicy.spec(self.observation_space, self.action_space, self.model_config)

    def forward_sequences(self, batch: TensorDict) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        features = self.replay(self.model, batch)
        return self._policy_params(self.model, features, batch), self.model.value(features)

    def policy_params_of(self, network: nn.Module, batch: TensorDict) -> tuple[torch.Tensor, ...]:
        return self._policy_params(network, self.replay(network, batch), batch)

    def bootstrap_values(self, rows: TensorDict) -> torch.Tensor:
        return self.model.values_from_states(rows["next", "observation"], rows["next_recurrent_state"])

    def replay(self, network: RecurrentActorCritic, batch: TensorDict) -> torch.Tensor:
        """Features ``[rows, T, H]`` of ``network`` over the minibatch's fragments."""
        return network.replay(
            batch["observation"],
            batch["is_init"][..., 0],
            batch["recurrent_state"],
            int(self.model_config.max_seq_len),
        )

    @staticmethod
    def _policy_params(
        network: RecurrentActorCritic, features: torch.Tensor, batch: TensorDict
    ) -> tuple[torch.Tensor, ...]:
        return network.policy_params(features, batch["observation"] if network.masked else None)
