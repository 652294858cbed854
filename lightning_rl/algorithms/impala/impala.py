"""IMPALA: an actor-critic learning from asynchronously sampled sequences, corrected by V-trace.

The runners sample continuously with whatever weights they have (:class:`AsyncDataModule`), so
the learner's policy is ahead of the one that acted by a few updates (the policy lag, logged
as ``learners/<policy>/policy_lag_mean``). V-trace (:mod:`.vtrace`, on torchrl's estimator)
turns such off-policy sequences into value targets and policy-gradient advantages with
clipped importance ratios. Each minibatch is a set of whole ``[rows, T]`` sequences; the
targets are computed in the loss with the current networks, so a batch reused for several
passes is corrected against the policy that learns from it. The loss itself is written out in
:mod:`.loss`. With a memory model in
``model_config`` (``use_lstm``/``use_gru``/``use_attention``) the module is
:class:`RecurrentImpalaModule`, which replays each fragment from the runner's stored states
(:mod:`.recurrent`); with a user's RLModule (``rl_module_spec``) it is
:class:`RLModuleImpalaModule` (:mod:`.rl_module`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch
from tensordict import TensorDict
from torch import nn

from lightning_rl.algorithms.base import Algorithm
from lightning_rl.algorithms.gradient_clipping import check_grad_clip, clip_gradients, resolve_clip
from lightning_rl.algorithms.impala.loss import IMPALA_KEYS, ImpalaLossConfig, impala_loss, vtrace_targets
from lightning_rl.algorithms.impala.recurrent import RecurrentNetworks
from lightning_rl.algorithms.impala.rl_module import RLModuleNetworks
from lightning_rl.algorithms.impala.vtrace import bootstrap_next_values
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.data.async_data import AsyncDataModule
from lightning_rl.data.experience import ExperienceDataModule
from lightning_rl.errors import ConfigError
from lightning_rl.modules.distributions import ActionDistribution
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicyNet, PolicySpec, StochasticPolicy, ValueNet
from lightning_rl.modules.recurrent import is_recurrent
from lightning_rl.modules.rl_module import spec_for_policy
from lightning_rl.schedules import PiecewiseSchedule, schedule_or_constant


class ImpalaModule(PolicyModule):
    """One policy's actor and critic and its V-trace actor-critic loss."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        gamma: float,
        vtrace_clip_rho_threshold: float,
        vtrace_clip_pg_rho_threshold: float,
        vf_loss_coeff: float,
        entropy_coeff: float,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        self.build_networks()
        self.loss_config = ImpalaLossConfig(
            gamma=float(gamma),
            vtrace_clip_rho_threshold=float(vtrace_clip_rho_threshold),
            vtrace_clip_pg_rho_threshold=float(vtrace_clip_pg_rho_threshold),
            vf_loss_coeff=float(vf_loss_coeff),
        )
        self.register_buffer("entropy_coeff", torch.tensor(float(entropy_coeff)))

    # -- networks (memory models override this group, see ``recurrent.py``) -------------------
    def build_networks(self) -> None:
        """The actor ``policy_net`` and critic ``value_net`` (sharing the encoder with
        ``vf_share_layers``)."""
        self.policy_net = PolicyNet(self.observation_space, self.action_space, self.model_config)
        shared = self.policy_net.encoder if self.model_config.vf_share_layers else None
        self.value_net = ValueNet(self.observation_space, self.model_config, shared_encoder=shared)

    def policy_network(self) -> nn.Module:
        """The network whose weights the runners act with (APPO's target policy is a copy)."""
        return self.policy_net

    @property
    def distribution_spec(self) -> ActionDistribution:
        return self.policy_net.distribution

    def forward_sequences(self, batch: TensorDict) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Distribution parameters and values ``[rows, T, 1]`` of a minibatch of sequences."""
        return self.policy_and_value(batch[IMPALA_KEYS.observation])

    def policy_params_of(self, network: nn.Module, batch: TensorDict) -> tuple[torch.Tensor, ...]:
        """Distribution parameters of ``network`` (a copy of :meth:`policy_network`) on ``batch``."""
        return network(batch[IMPALA_KEYS.observation])

    def bootstrap_values(self, rows: TensorDict) -> torch.Tensor:
        """``V`` ``[K, 1]`` of the true next observations of ``rows`` (a flat ``[K]`` batch)."""
        return self.value_net(rows[IMPALA_KEYS.next_observation])

    # -- what the runners run ----------------------------------------------------------------
    def policy_spec(self) -> PolicySpec:
        return self.runner_policy_spec(StochasticPolicy)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.policy_network().state_dict()

    # -- feed-forward forward pass -----------------------------------------------------------
    def policy_and_value(self, obs: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Distribution parameters and ``V(obs)`` (``[..., 1]``); a shared encoder runs once.

        With ``vf_share_layers`` the value head reads the features the policy's encoder
        produced in the same forward (caught with a forward hook, so any PolicyNet head layout
        works), which halves the cost of a CNN trunk.
        """
        if self.value_net.encoder is not self.policy_net.encoder:
            return self.policy_net(obs), self.value_net(obs)
        features: list[torch.Tensor] = []
        handle = self.policy_net.encoder.register_forward_hook(lambda _m, _i, out: features.append(out))
        try:
            params = self.policy_net(obs)
        finally:
            handle.remove()
        return params, self.value_net.head(features[-1])

    def distribution(self, params: tuple[torch.Tensor, ...]) -> torch.distributions.Distribution:
        """The torch distribution of the policy net's outputs (log-probs, entropy, KL)."""
        spec = self.distribution_spec
        return spec.torch_distribution_class()(
            **dict(zip(spec.param_keys, params, strict=True)), **spec.torch_distribution_kwargs()
        )

    # -- loss (written out in ``loss.py``) ----------------------------------------------------
    def vtrace_targets(
        self, batch: TensorDict, value: torch.Tensor, target_log_prob: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v_s, pg_advantages)`` of ``[rows, T]`` sequences, ``target_log_prob`` ``[rows, T, 1]``."""
        keys = IMPALA_KEYS
        with torch.no_grad():
            next_value = bootstrap_next_values(value.detach(), batch, self.bootstrap_values)
        return vtrace_targets(
            behaviour_log_prob=batch[keys.behaviour_log_prob].unsqueeze(-1),
            target_log_prob=target_log_prob,
            value=value,
            next_value=next_value,
            reward=batch[keys.reward],
            done=batch[keys.done],
            terminated=batch[keys.terminated],
            config=self.loss_config,
        )

    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, Any]]:
        """Policy gradient with V-trace advantages + value regression onto ``v_s`` - entropy."""
        keys = IMPALA_KEYS
        params, value = self.forward_sequences(batch)
        dist = self.distribution(params)
        log_prob = dist.log_prob(batch[keys.action]).unsqueeze(-1)
        vs, advantages = self.vtrace_targets(batch, value, log_prob)
        stats = impala_loss(
            log_prob=log_prob,
            behaviour_log_prob=batch[keys.behaviour_log_prob].unsqueeze(-1),
            value=value,
            vs=vs,
            advantages=advantages,
            entropy=dist.entropy(),
            config=self.loss_config,
            entropy_coeff=self.entropy_coeff,
        )
        return stats["total_loss"], stats


class RecurrentImpalaModule(RecurrentNetworks, ImpalaModule):
    """IMPALA's V-trace actor-critic on a memory model (``use_lstm``/``use_gru``/``use_attention``)."""


class RLModuleImpalaModule(RLModuleNetworks, ImpalaModule):
    """IMPALA's V-trace actor-critic on a user's RLModule (``rl_module_spec``, see ``rl_module.py``)."""


class IMPALA(Algorithm):
    """IMPALA (Espeholt et al. 2018) with RLlib's names; learns from asynchronous runners.

    Args:
        vtrace_clip_rho_threshold: clip of the importance ratios in the V-trace value targets.
        vtrace_clip_pg_rho_threshold: clip of the importance ratios in the policy-gradient
            advantages.
        vf_loss_coeff: weight of the value loss.
        entropy_coeff: weight of the entropy bonus.
        entropy_coeff_schedule: ``[[env_step, coeff], ...]`` overriding ``entropy_coeff``.
        grad_clip: gradient clip (None: off), applied as ``grad_clip_by`` says.
        grad_clip_by: ``"global_norm"`` (the gradients' joint L2 norm; RLlib's default),
            ``"norm"`` (each parameter's own L2 norm) or ``"value"`` (each element).
        lr_schedule: ``[[env_step, lr], ...]`` piecewise-linear learning rate.
        minibatch_size: env steps per gradient update, a multiple of ``rollout_fragment_length``
            (whole sequences); None: the whole train batch.
        num_epochs: passes over each train batch.
        train_batches_per_iteration: train batches of ``train_batch_size`` env steps learned
            from per training iteration (Lightning epoch).
        broadcast_interval: optimizer steps between weight broadcasts to the runners.
        max_requests_in_flight_per_env_runner: sample calls queued on each runner, so it
            starts its next fragment without waiting for the learner.

    See :class:`~lightning_rl.algorithms.Algorithm` for env, runner, evaluation and model args.
    """

    datamodule_class: ClassVar[type[ExperienceDataModule]] = AsyncDataModule
    module_class: ClassVar[type[ImpalaModule]] = ImpalaModule
    recurrent_module_class: ClassVar[type[ImpalaModule]] = RecurrentImpalaModule
    rl_module_class: ClassVar[type[ImpalaModule]] = RLModuleImpalaModule
    supports_memory_models: ClassVar[bool] = True
    supports_rl_modules: ClassVar[bool] = True

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        lr: float = 5e-4,
        gamma: float = 0.99,
        train_batch_size: int = 500,
        rollout_fragment_length: int | Literal["auto"] = 50,
        vtrace_clip_rho_threshold: float = 1.0,
        vtrace_clip_pg_rho_threshold: float = 1.0,
        vf_loss_coeff: float = 0.5,
        entropy_coeff: float = 0.01,
        entropy_coeff_schedule: list[list[float]] | None = None,
        grad_clip: float | None = 40.0,
        grad_clip_by: str = "global_norm",
        lr_schedule: list[list[float]] | None = None,
        minibatch_size: int | None = None,
        num_epochs: int = 1,
        train_batches_per_iteration: int = 1,
        broadcast_interval: int = 1,
        max_requests_in_flight_per_env_runner: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            env,
            env_config,
            lr=lr,
            gamma=gamma,
            train_batch_size=train_batch_size,
            rollout_fragment_length=rollout_fragment_length,
            **kwargs,
        )
        self._lr_schedule = PiecewiseSchedule(lr_schedule) if lr_schedule else None
        self._entropy_schedule = schedule_or_constant(entropy_coeff_schedule, entropy_coeff)
        # Lifetime policy lag (learner version at learning time minus the sampling version).
        self.policy_lag_sum = 0.0
        self.policy_lag_count = 0
        self.policy_lag_max = 0

    # -- configuration -----------------------------------------------------------------------
    def validate_hparams(self) -> None:
        h = self.hparams
        self.require_positive(
            num_epochs=h.num_epochs,
            train_batches_per_iteration=h.train_batches_per_iteration,
            broadcast_interval=h.broadcast_interval,
            max_requests_in_flight_per_env_runner=h.max_requests_in_flight_per_env_runner,
            vtrace_clip_rho_threshold=h.vtrace_clip_rho_threshold,
            vtrace_clip_pg_rho_threshold=h.vtrace_clip_pg_rho_threshold,
        )
        for name in ("num_epochs", "train_batches_per_iteration", "broadcast_interval"):
            if not isinstance(h[name], int):
                raise ConfigError(f"{name} must be a positive integer, got {h[name]!r}.")
        if h.minibatch_size is not None:
            self.require_positive(minibatch_size=h.minibatch_size)
            if h.minibatch_size > h.train_batch_size:
                raise ConfigError(
                    f"minibatch_size ({h.minibatch_size}) must not exceed train_batch_size "
                    f"({h.train_batch_size})."
                )
            fragment = h.rollout_fragment_length
            if fragment != "auto" and h.minibatch_size % fragment:
                raise ConfigError(
                    f"minibatch_size ({h.minibatch_size}) must be a multiple of rollout_fragment_length "
                    f"({fragment}): V-trace learns from whole sampled sequences."
                )
        check_grad_clip(h.grad_clip, h.grad_clip_by)
        if h.vf_loss_coeff < 0 or h.entropy_coeff < 0:
            raise ConfigError(
                f"vf_loss_coeff and entropy_coeff must be >= 0, got {h.vf_loss_coeff!r}, {h.entropy_coeff!r}."
            )

    def module_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of this algorithm's PolicyModule (APPO adds its own)."""
        h = self.hparams
        return {
            "gamma": h.gamma,
            "vtrace_clip_rho_threshold": h.vtrace_clip_rho_threshold,
            "vtrace_clip_pg_rho_threshold": h.vtrace_clip_pg_rho_threshold,
            "vf_loss_coeff": h.vf_loss_coeff,
            "entropy_coeff": float(schedule_or_constant(h.entropy_coeff_schedule, h.entropy_coeff)(0)),
        }

    def build_policy_module(self, policy_id: str, observation_space, action_space) -> ImpalaModule:
        # A policy added later (a self-play snapshot) is built like the policy it copies.
        source = self.policy_set.added.get(policy_id, {}).get("from_policy", policy_id)
        spec = spec_for_policy(self.rl_module_specs, source)
        if spec is not None and spec.module_class is not None:  # a user's RLModule (RLlib's surface)
            return self.rl_module_class(
                observation_space, action_space, self.model_config, spec=spec, **self.module_kwargs()
            )
        module_class = self.recurrent_module_class if is_recurrent(self.model_config) else self.module_class
        return module_class(observation_space, action_space, self.model_config, **self.module_kwargs())

    # -- training ----------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        coeff = self._entropy_schedule(self.num_env_steps_sampled_lifetime)
        for module in self.policies.values():
            if isinstance(module, ImpalaModule):
                module.entropy_coeff.fill_(coeff)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        total = 0.0
        for policy_id, policy_batch in self.policy_batches(batch):
            loss, stats = self.policies[policy_id].compute_loss(policy_batch)
            stats.update(self.policy_lag(policy_batch))
            self.accumulate_learner_metrics(stats, policy_id)
            total = total + loss
        return total if isinstance(total, torch.Tensor) else self.zero_loss()

    def policy_lag(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """Learner weights version now minus the version each row was sampled with."""
        lag = (self.weights_version - batch["weights_version"]).float()
        self.policy_lag_sum += float(lag.sum())
        self.policy_lag_count += lag.numel()
        self.policy_lag_max = max(self.policy_lag_max, int(lag.max()))
        return {"policy_lag_mean": lag.mean()}

    @property
    def policy_lag_mean(self) -> float:
        """Mean policy lag over every row learned from so far in this process."""
        return self.policy_lag_sum / self.policy_lag_count if self.policy_lag_count else 0.0

    # Sampling metrics are logged at an iteration's last minibatch (not its first, as the base
    # class does): fragments keep arriving during the iteration, and callbacks at epoch end
    # (stopping, checkpoints) should see all of them.
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self.log_sampling_metrics()
        super().on_train_batch_end(outputs, batch, batch_idx)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        clip_gradients(
            self, optimizer, *resolve_clip(self.hparams, gradient_clip_val, gradient_clip_algorithm)
        )

    def build_optimizers(self) -> Any:
        optimizer = self.adam([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr, eps=1e-7)
        if self._lr_schedule is None:
            return optimizer
        base = self.hparams.lr
        schedule = self._lr_schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda _: schedule(self.num_env_steps_sampled_lifetime) / base
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
