"""APPO: PPO's clipped surrogate on V-trace advantages, against a slowly moving target policy.

IMPALA's learner (asynchronous runners, V-trace) with three changes from RLlib's APPO:

* a **target policy network**, updated every ``target_network_update_freq`` optimizer steps
  as ``target <- tau * online + (1 - tau) * target``, plays the part of PPO's "old policy":
  V-trace corrects the runners' samples towards it, and the surrogate ratio measures how far
  the learning policy moved from it;
* the **clipped surrogate** ``min(A * r, A * clip(r, 1 - clip_param, 1 + clip_param))`` with
  ``r = clip(mu / pi_target, 0, 2) * pi / mu`` (the ratio to the target policy, computed
  through the behaviour log-probs that the runners recorded);
* an optional **KL loss** ``kl_coeff * KL(pi_target || pi)``, ``kl_coeff`` adapted towards
  ``kl_target`` at every target update;

and a **circular buffer** of recent batches (``circular_buffer_num_batches``), each learned
from up to ``circular_buffer_iterations_per_batch`` times (:class:`AsyncDataModule`). The loss
is written out in :mod:`.loss`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDict

from lightning_rl.algorithms.appo.loss import APPO_KEYS, APPOLossConfig, appo_loss
from lightning_rl.algorithms.impala.impala import IMPALA, ImpalaModule
from lightning_rl.algorithms.impala.recurrent import RecurrentNetworks
from lightning_rl.algorithms.impala.rl_module import RLModuleNetworks
from lightning_rl.algorithms.kl_penalty import adapt_kl_coeff
from lightning_rl.errors import ConfigError
from lightning_rl.modules.model_config import DefaultModelConfig


class APPOModule(ImpalaModule):
    """IMPALA's networks plus a target policy network and APPO's loss."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        clip_param: float,
        use_kl_loss: bool,
        kl_coeff: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, model_config, **kwargs)
        self.loss_config = APPOLossConfig(
            **dataclasses.asdict(self.loss_config),
            clip_param=float(clip_param),
            use_kl_loss=bool(use_kl_loss),
        )
        self.target_policy_net = copy.deepcopy(self.policy_network())
        self.target_policy_net.requires_grad_(False)
        self.register_buffer("kl_coeff", torch.tensor(float(kl_coeff)))

    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, Any]]:
        """APPO's loss (:mod:`.loss`): V-trace towards the target policy, clipped surrogate."""
        keys = APPO_KEYS
        params, value = self.forward_sequences(batch)
        dist = self.distribution(params)
        action = batch[keys.action]
        log_prob = dist.log_prob(action).unsqueeze(-1)
        with torch.no_grad():
            target_dist = self.distribution(self.policy_params_of(self.target_policy_net, batch))
            target_log_prob = target_dist.log_prob(action).unsqueeze(-1)
        vs, advantages = self.vtrace_targets(batch, value, target_log_prob)
        behaviour_log_prob = batch[keys.behaviour_log_prob].unsqueeze(-1)
        stats = appo_loss(
            log_prob=log_prob,
            target_log_prob=target_log_prob,
            behaviour_log_prob=behaviour_log_prob,
            value=value,
            vs=vs,
            advantages=advantages,
            entropy=dist.entropy(),
            kl=torch.distributions.kl_divergence(target_dist, dist),
            config=self.loss_config,
            entropy_coeff=self.entropy_coeff,
            kl_coeff=self.kl_coeff,
        )
        return stats["total_loss"], stats

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """``target <- tau * online + (1 - tau) * target`` (tau = 1: a copy)."""
        for target, online in zip(
            self.target_policy_net.state_dict().values(),
            self.policy_network().state_dict().values(),
            strict=True,
        ):
            if target.is_floating_point() and tau < 1.0:
                target.lerp_(online, float(tau))
            else:
                target.copy_(online)


class RecurrentAPPOModule(RecurrentNetworks, APPOModule):
    """APPO's loss on a memory model; its target policy is a copy of the whole recurrent network,
    replayed from the same stored states."""


class RLModuleAPPOModule(RLModuleNetworks, APPOModule):
    """APPO's loss on a user's RLModule; its target policy is a copy of the module."""

    algorithm_name = "APPO"


class APPO(IMPALA):
    """Asynchronous PPO (RLlib's APPO): IMPALA's runners and V-trace with PPO's clipping.

    Args:
        clip_param: clip range of the ratio between the learning and the target policy.
        use_kl_loss: add ``kl_coeff * KL(target || current)``, adapting ``kl_coeff`` towards
            ``kl_target`` at every target update.
        kl_coeff: initial weight of the KL loss.
        kl_target: the KL the adaptive ``kl_coeff`` aims for.
        tau: target update rate (1: copy the online policy).
        target_network_update_freq: optimizer steps between target updates.
        circular_buffer_num_batches: recent train batches kept for reuse.
        circular_buffer_iterations_per_batch: times each batch is learned from at most; also
            the number of buffer draws (each one pass of minibatches) per new batch.

    See :class:`~lightning_rl.algorithms.impala.IMPALA` for V-trace, loss weights, the
    asynchronous sampling settings, and :class:`~lightning_rl.algorithms.Algorithm` for the rest.
    """

    module_class = APPOModule
    recurrent_module_class = RecurrentAPPOModule
    rl_module_class = RLModuleAPPOModule

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        clip_param: float = 0.4,
        use_kl_loss: bool = False,
        kl_coeff: float = 1.0,
        kl_target: float = 0.01,
        tau: float = 1.0,
        target_network_update_freq: int = 4,
        circular_buffer_num_batches: int = 4,
        circular_buffer_iterations_per_batch: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(env, env_config, **kwargs)
        self._iteration_kl: dict[str, list[torch.Tensor]] = {}

    def validate_hparams(self) -> None:
        super().validate_hparams()
        h = self.hparams
        self.require_positive(
            clip_param=h.clip_param,
            target_network_update_freq=h.target_network_update_freq,
            circular_buffer_num_batches=h.circular_buffer_num_batches,
            circular_buffer_iterations_per_batch=h.circular_buffer_iterations_per_batch,
        )
        for name in (
            "target_network_update_freq",
            "circular_buffer_num_batches",
            "circular_buffer_iterations_per_batch",
        ):
            if not isinstance(h[name], int):
                raise ConfigError(f"{name} must be a positive integer, got {h[name]!r}.")
        if not 0.0 < float(h.tau) <= 1.0:
            raise ConfigError(f"tau must be in (0, 1], got {h.tau!r}.")
        if h.num_epochs != 1:
            raise ConfigError(
                f"APPO reuses batches through circular_buffer_iterations_per_batch; num_epochs must stay 1, "
                f"got {h.num_epochs!r}."
            )

    def module_kwargs(self) -> dict[str, Any]:
        h = self.hparams
        return {
            **super().module_kwargs(),
            "clip_param": h.clip_param,
            "use_kl_loss": h.use_kl_loss,
            "kl_coeff": h.kl_coeff,
        }

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        total = 0.0
        for policy_id, policy_batch in self.policy_batches(batch):
            loss, stats = self.policies[policy_id].compute_loss(policy_batch)
            stats.update(self.policy_lag(policy_batch))
            self._iteration_kl.setdefault(policy_id, []).append(stats["mean_kl_loss"].detach())
            self.accumulate_learner_metrics(stats, policy_id)
            total = total + loss
        return total if isinstance(total, torch.Tensor) else self.zero_loss()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.global_step % int(self.hparams.target_network_update_freq) == 0:
            self.update_targets()

    def update_targets(self) -> None:
        """Move every trained policy's target network; adapt its KL coefficient."""
        for policy_id in self.policies_to_train:
            module = self.policies[policy_id]
            if not isinstance(module, APPOModule):
                continue
            module.update_target(self.hparams.tau)
            kls = self._iteration_kl.pop(policy_id, None)
            if self.hparams.use_kl_loss and kls:
                adapt_kl_coeff(module.kl_coeff, float(torch.stack(kls).mean()), self.hparams.kl_target)
