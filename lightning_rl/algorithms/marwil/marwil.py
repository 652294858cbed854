"""MARWIL (Wang et al., 2018): behaviour cloning re-weighted by exponentiated advantages.

RLlib's loss, written out step by step in :mod:`.loss`: advantages ``A = target - V(s)``
against bootstrapped discounted returns, normalised by a moving average of ``A^2``, and

    policy_loss = -mean(exp(beta * A / (1e-8 + c)) * (log pi(a|s) + bc_logstd_coeff * log std))
    total_loss = policy_loss + vf_coeff * 0.5 * mean(A^2)

With ``beta = 0`` the weights are 1 and it is plain behaviour cloning (see
:mod:`~lightning_rl.algorithms.bc`). The policy network is the same ``PolicyNet`` PPO uses, so a
cloned policy can start PPO.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import torch
from tensordict import TensorDict

from lightning_rl.algorithms.gradient_clipping import check_grad_clip
from lightning_rl.algorithms.marwil.loss import (
    MARWIL_KEYS,
    MARWILLossConfig,
    advantage_weights,
    behaviour_cloning_loss,
    log_likelihood,
    marwil_loss,
    value_targets,
)
from lightning_rl.algorithms.marwil.rl_module import RLModuleBCModule
from lightning_rl.algorithms.offline import OfflineAlgorithm
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.errors import ConfigError
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicyNet, PolicySpec, StochasticPolicy, ValueNet
from lightning_rl.modules.rl_module import spec_for_policy
from lightning_rl.offline.rows import OfflineRequirements


class MARWILModule(PolicyModule):
    """One policy's ``PolicyNet`` (and, with ``beta > 0`` or when asked, ``ValueNet``) and the MARWIL loss.

    ``fit_value_function`` (default: ``beta > 0``) trains the critic even with ``beta = 0``,
    where it does not change the policy loss: BC uses it so that an algorithm started from the
    clone (PPO) also gets a trained critic.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        beta: float,
        bc_logstd_coeff: float,
        vf_coeff: float,
        moving_average_sqd_adv_norm_start: float,
        moving_average_sqd_adv_norm_update_rate: float,
        fit_value_function: bool | None = None,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        self.policy_net = PolicyNet(observation_space, action_space, model_config)
        fit = beta > 0 if fit_value_function is None else fit_value_function
        self.value_net = ValueNet(observation_space, model_config) if fit else None
        self.loss_config = MARWILLossConfig(
            beta=float(beta),
            bc_logstd_coeff=float(bc_logstd_coeff),
            vf_coeff=float(vf_coeff),
            moving_average_sqd_adv_norm_update_rate=float(moving_average_sqd_adv_norm_update_rate),
        )
        # c^2: kept in checkpoints with the weights.
        self.register_buffer(
            "moving_avg_sqd_adv_norm", torch.tensor(float(moving_average_sqd_adv_norm_start))
        )

    def policy_spec(self) -> PolicySpec:
        return self.runner_policy_spec(StochasticPolicy)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.policy_net.state_dict()

    def advantage_weights(
        self, batch: TensorDict
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(exp-weights (no grad), advantages, value targets, mean A^2)``; updates c^2 first."""
        keys = MARWIL_KEYS
        values = self.value_net(batch[keys.observation]).squeeze(-1)
        with torch.no_grad():
            bootstrap = self.value_net(batch[keys.bootstrap_observation]).squeeze(-1)
            targets = value_targets(batch[keys.return_to_go], batch[keys.bootstrap_discount], bootstrap)
        weights, advantages, squared_mean = advantage_weights(
            values, targets, self.moving_avg_sqd_adv_norm, self.loss_config
        )
        return weights, advantages, targets, squared_mean

    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, Any]]:
        """MARWIL's loss (:mod:`.loss`); without a critic, behaviour cloning's."""
        keys = MARWIL_KEYS
        params = self.policy_net(batch[keys.observation])
        log_prob = self.policy_net.distribution.log_prob(params, batch[keys.action])
        log_std = params[1].log() if self.policy_net.continuous else None
        log_lik = log_likelihood(log_prob, log_std, self.loss_config)
        if self.value_net is None:
            stats = behaviour_cloning_loss(log_lik)
        else:
            weights, advantages, targets, squared_mean = self.advantage_weights(batch)
            stats = marwil_loss(
                log_lik=log_lik,
                weights=weights,
                advantages=advantages,
                value_target=targets,
                squared_mean=squared_mean,
                moving_avg_sqd_adv_norm=self.moving_avg_sqd_adv_norm,
                config=self.loss_config,
            )
        return stats["total_loss"], stats


class MARWIL(OfflineAlgorithm):
    """Monotonic Advantage Re-Weighted Imitation Learning (RLlib's names and defaults).

    Args:
        beta: advantage scaling in the exponent (0: behaviour cloning); in [0, 1] as in RLlib.
        bc_logstd_coeff: weight of the mean log std added to the log-likelihood (continuous
            actions): keeps the cloned policy from collapsing its spread.
        moving_average_sqd_adv_norm_start: starting value of the moving average of squared
            advantages (c^2).
        moving_average_sqd_adv_norm_update_rate: its update rate.
        vf_coeff: weight of the value loss.
        grad_clip: gradient clip (None: off), applied as ``grad_clip_by`` says.
        grad_clip_by: ``"global_norm"`` (the gradients' joint L2 norm; RLlib's default),
            ``"norm"`` (each parameter's own L2 norm) or ``"value"`` (each element).

    See :class:`~lightning_rl.algorithms.offline.OfflineAlgorithm` for the data settings.
    """

    # BC's loss around a user's RLModule (rl_module_spec); advantage weighting needs a critic.
    supports_rl_modules: ClassVar[bool] = True

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        beta: float = 1.0,
        bc_logstd_coeff: float = 0.0,
        moving_average_sqd_adv_norm_start: float = 100.0,
        moving_average_sqd_adv_norm_update_rate: float = 1e-8,
        vf_coeff: float = 1.0,
        grad_clip: float | None = None,
        grad_clip_by: str = "global_norm",
        lr: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(env, env_config, lr=lr, **kwargs)

    def validate_hparams(self) -> None:
        super().validate_hparams()
        h = self.hparams
        if not 0.0 <= float(h.beta) <= 1.0:
            raise ConfigError(f"beta must be within [0, 1], got {h.beta!r}.")
        if h.bc_logstd_coeff < 0:
            raise ConfigError(f"bc_logstd_coeff must be >= 0, got {h.bc_logstd_coeff!r}.")
        self.require_positive(
            moving_average_sqd_adv_norm_start=h.moving_average_sqd_adv_norm_start,
            moving_average_sqd_adv_norm_update_rate=h.moving_average_sqd_adv_norm_update_rate,
        )
        if h.vf_coeff < 0:
            raise ConfigError(f"vf_coeff must be >= 0, got {h.vf_coeff!r}.")
        check_grad_clip(h.grad_clip, h.grad_clip_by)

    def fits_value_function(self) -> bool:
        """Whether the modules train a critic (and the data must carry returns)."""
        return float(self.hparams.beta) > 0.0

    def offline_requirements(self) -> OfflineRequirements:
        return OfflineRequirements(returns=self.fits_value_function(), gamma=float(self.hparams.gamma))

    def build_policy_module(self, policy_id: str, observation_space, action_space) -> PolicyModule:
        h = self.hparams
        spec = spec_for_policy(self.rl_module_specs, policy_id)
        if spec is not None and spec.module_class is not None:  # a user's RLModule (RLlib's surface)
            if float(h.beta) > 0.0:
                raise ConfigError(
                    f"{type(self).__name__} with beta={h.beta} weights by advantages, which needs a value "
                    "function; with an rl_module_spec use beta=0 (behaviour cloning, BC)."
                )
            return RLModuleBCModule(
                observation_space,
                action_space,
                self.model_config,
                spec=spec,
                loss_config=MARWILLossConfig(
                    beta=float(h.beta),
                    bc_logstd_coeff=float(h.bc_logstd_coeff),
                    vf_coeff=float(h.vf_coeff),
                    moving_average_sqd_adv_norm_update_rate=float(h.moving_average_sqd_adv_norm_update_rate),
                ),
            )
        return MARWILModule(
            observation_space,
            action_space,
            self.model_config,
            beta=float(h.beta),
            bc_logstd_coeff=float(h.bc_logstd_coeff),
            vf_coeff=float(h.vf_coeff),
            moving_average_sqd_adv_norm_start=float(h.moving_average_sqd_adv_norm_start),
            moving_average_sqd_adv_norm_update_rate=float(h.moving_average_sqd_adv_norm_update_rate),
            fit_value_function=self.fits_value_function(),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        total = 0.0
        for policy_id, policy_batch in self.policy_batches(batch):
            loss, stats = self.policies[policy_id].compute_loss(policy_batch)
            self.accumulate_learner_metrics(stats, policy_id)
            total = total + loss
        return total if isinstance(total, torch.Tensor) else self.zero_loss()
