"""Proximal Policy Optimization: its loss written out in :mod:`.loss`, advantages by torchrl's GAE function.

One Lightning epoch is one iteration: the OnPolicyDataModule samples ``train_batch_size``
steps, :meth:`PPO.process_rollout` adds GAE advantages and value targets with the current
critic (bootstrapping truncated episodes from their true final observation), and hands the
iteration over as one :class:`~lightning_rl.data.on_policy.IterationBatch`.

One ``training_step`` runs the whole iteration's ``num_epochs x minibatches`` updates with
manual optimisation (``manual_backward``, ``optimizer.step()``): on CartPole-sized networks
Lightning's per-batch loop cost about as much as the update itself
(``benchmarks/learner_overhead.py``). Lightning's hooks still run per update inside it:
``on_before_backward``/``on_after_backward`` and ``on_before_optimizer_step`` (the non-finite
guard, then gradient clipping through ``configure_gradient_clipping``), so callbacks see every
update; under DDP ``manual_backward`` all-reduces each update's gradients. Learner stats are
collected as tensors and logged once per iteration under the same names as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym
import torch
from tensordict import TensorDict

from lightning_rl.algorithms.base import Algorithm
from lightning_rl.algorithms.gradient_clipping import check_grad_clip, clip_gradients, resolve_clip
from lightning_rl.algorithms.kl_penalty import adapt_kl_coeff
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.algorithms.ppo.gae import add_advantages
from lightning_rl.algorithms.ppo.learner_distribution import learner_distribution
from lightning_rl.algorithms.ppo.legacy_state import drop_legacy_loss_state
from lightning_rl.algorithms.ppo.loss import PPO_KEYS, PPOLossConfig, ppo_loss_for_batch
from lightning_rl.algorithms.ppo.recurrent import RecurrentPPOModule
from lightning_rl.algorithms.rl_module_adapter import RLModulePPOModule
from lightning_rl.data.on_policy import IterationBatch
from lightning_rl.errors import ConfigError
from lightning_rl.modules.model_config import DefaultModelConfig, resolve_model_config
from lightning_rl.modules.policy_networks import PolicyNet, PolicySpec, StochasticPolicy, ValueNet
from lightning_rl.modules.recurrent import is_recurrent
from lightning_rl.modules.rl_module import spec_for_policy
from lightning_rl.schedules import PiecewiseSchedule, check_non_negative_schedule, schedule_or_constant


class PPOModule(PolicyModule):
    """One policy's actor and critic, its GAE (:mod:`.gae`) and its loss (:mod:`.loss`)."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        gamma: float,
        lambda_: float,
        loss_config: PPOLossConfig,
        entropy_coeff: float,
        kl_coeff: float,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        self.policy_net = PolicyNet(observation_space, action_space, model_config)
        shared = self.policy_net.encoder if model_config.vf_share_layers else None
        self.value_net = ValueNet(observation_space, model_config, shared_encoder=shared)
        self.loss_config = loss_config
        self.gamma, self.lambda_ = float(gamma), float(lambda_)
        # Set by PPO at every iteration from ``entropy_coeff_schedule``; not saved.
        self.register_buffer("entropy_coeff", torch.tensor(float(entropy_coeff)), persistent=False)
        self.register_buffer("kl_coeff", torch.tensor(float(kl_coeff)))
        self.register_load_state_dict_pre_hook(drop_legacy_loss_state)

    def policy_spec(self) -> PolicySpec:
        return self.runner_policy_spec(StochasticPolicy)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.policy_net.state_dict()

    def process_rollout(self, batch: TensorDict) -> TensorDict:
        """GAE over the whole ``[num_envs, T]`` batch with the current critic.

        The critic's values of ``observation`` and ``("next", "observation")`` (the true final
        observation where an episode was truncated) go through :mod:`.gae`'s reverse scan.
        """
        keys = PPO_KEYS
        with torch.no_grad():
            value = self.value_net(batch[keys.observation])
            next_value = self.value_net(batch["next", keys.observation])
        return add_advantages(batch, value, next_value, self.gamma, self.lambda_)

    def distribution(self, params: tuple[torch.Tensor, ...]) -> torch.distributions.Distribution:
        """The torch distribution of the policy net's outputs (log-probs and entropy)."""
        return learner_distribution(self.policy_net.distribution, params)

    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, Any]]:
        """Clipped surrogate + value loss (+ entropy bonus, + KL penalty); returns stats too."""
        observation = batch[PPO_KEYS.observation]
        dist = self.distribution(self.policy_net(observation))
        terms = ppo_loss_for_batch(
            batch,
            dist,
            self.value_net(observation),
            self.loss_config,
            entropy_coeff=self.entropy_coeff,
            kl_coeff=self.kl_coeff,
        )
        return terms.total_loss, terms.deferred_stats()


class PPO(Algorithm):
    """PPO with clipped surrogate, GAE, optional KL penalty and schedules (RLlib's names).

    Args:
        lambda_: GAE lambda.
        clip_param: PPO clip range of the probability ratio.
        clip_param_schedule: ``[[env_step, clip], ...]`` overriding ``clip_param``, set at the
            start of every iteration (Stable-Baselines3's ``clip_range`` schedule: RL-Zoo
            decays it with the learning rate, which steadies late training).
        vf_clip_param: clip the new value prediction to within this distance of the old one
            (PPO2-style value clipping); None disables.
        vf_loss_coeff: weight of the value loss.
        entropy_coeff: weight of the entropy bonus.
        entropy_coeff_schedule: ``[[env_step, coeff], ...]`` overriding ``entropy_coeff``.
        use_kl_loss: add ``kl_coeff * KL(old || new)``, adapting ``kl_coeff`` towards ``kl_target``.
        grad_clip: gradient clip (None: off), applied as ``grad_clip_by`` says.
        grad_clip_by: ``"global_norm"`` (the gradients' joint L2 norm; RLlib's default),
            ``"norm"`` (each parameter's own L2 norm) or ``"value"`` (each element).
        minibatch_size: steps per gradient update.
        num_epochs: passes over each sampled batch.
        normalize_advantages: standardise advantages per minibatch.
        lr_schedule: ``[[env_step, lr], ...]`` piecewise-linear learning rate.

    See :class:`~lightning_rl.algorithms.Algorithm` for env, runner, evaluation and model args.
    """

    supports_memory_models: ClassVar[bool] = True
    # The OnPolicyDataModule hands over whole iterations (see the module docstring).
    learns_whole_iterations: ClassVar[bool] = True
    supports_rl_modules: ClassVar[bool] = True

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        lr: float = 3e-4,
        gamma: float = 0.99,
        lambda_: float = 0.95,
        clip_param: float = 0.2,
        clip_param_schedule: list[list[float]] | None = None,
        vf_clip_param: float | None = None,
        vf_loss_coeff: float = 0.5,
        entropy_coeff: float = 0.0,
        entropy_coeff_schedule: list[list[float]] | None = None,
        use_kl_loss: bool = False,
        kl_coeff: float = 0.2,
        kl_target: float = 0.01,
        grad_clip: float | None = 0.5,
        grad_clip_by: str = "global_norm",
        train_batch_size: int = 2048,
        minibatch_size: int = 64,
        num_epochs: int = 10,
        normalize_advantages: bool = True,
        lr_schedule: list[list[float]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(env, env_config, lr=lr, gamma=gamma, train_batch_size=train_batch_size, **kwargs)
        self._lr_schedule = PiecewiseSchedule(lr_schedule) if lr_schedule else None
        self._entropy_schedule = schedule_or_constant(entropy_coeff_schedule, entropy_coeff)
        self._iteration_kl: dict[str, list[torch.Tensor]] = {}
        self.automatic_optimization = False

    def validate_hparams(self) -> None:
        h = self.hparams
        self.require_positive(
            minibatch_size=h.minibatch_size, num_epochs=h.num_epochs, clip_param=h.clip_param
        )
        if not 0.0 <= h.lambda_ <= 1.0:
            raise ConfigError(f"lambda_ must be in [0, 1], got {h.lambda_!r}.")
        if h.minibatch_size > h.train_batch_size:
            raise ConfigError(
                f"minibatch_size ({h.minibatch_size}) must not exceed "
                f"train_batch_size ({h.train_batch_size})."
            )
        check_grad_clip(h.grad_clip, h.grad_clip_by)
        check_non_negative_schedule("clip_param_schedule", h.clip_param_schedule, " (a clip range)")

    def build_policy_module(self, policy_id: str, observation_space, action_space) -> PolicyModule:
        h = self.hparams
        start_entropy = schedule_or_constant(h.entropy_coeff_schedule, h.entropy_coeff)(0)
        # A policy added later (a self-play snapshot) is built like the policy it copies.
        source = self.policy_set.added.get(policy_id, {}).get("from_policy", policy_id)
        spec = spec_for_policy(self.rl_module_specs, source)
        if spec is not None and spec.module_class is not None:  # a user's RLModule (RLlib's surface)
            return RLModulePPOModule(
                observation_space,
                action_space,
                self.model_config,
                spec=spec,
                gamma=h.gamma,
                lambda_=h.lambda_,
                loss_config=self.loss_config(),
                entropy_coeff=float(start_entropy),
                kl_coeff=h.kl_coeff,
            )
        model_config = self.model_config
        if spec is not None and spec.model_config:  # RLModuleSpec(model_config=...): this policy's
            model_config = resolve_model_config({**model_config.to_dict(), **dict(spec.model_config)})
        module_class = RecurrentPPOModule if is_recurrent(model_config) else PPOModule
        return module_class(
            observation_space,
            action_space,
            model_config,
            gamma=h.gamma,
            lambda_=h.lambda_,
            loss_config=self.loss_config(),
            entropy_coeff=float(start_entropy),
            kl_coeff=h.kl_coeff,
        )

    def loss_config(self) -> PPOLossConfig:
        """The settings of :func:`~lightning_rl.algorithms.ppo.loss.ppo_loss` from the hparams
        (``clip_param`` as scheduled at env step 0)."""
        h = self.hparams
        return PPOLossConfig(
            clip_param=self._clip_param_at(0),
            vf_clip_param=None if h.vf_clip_param is None else float(h.vf_clip_param),
            vf_loss_coeff=float(h.vf_loss_coeff),
            use_entropy=bool(h.entropy_coeff) or bool(h.entropy_coeff_schedule),
            normalize_advantages=bool(h.normalize_advantages),
            use_kl_loss=bool(h.use_kl_loss),
        )

    # -- training ----------------------------------------------------------------------------
    def _clip_param_at(self, env_step: int) -> float:
        h = self.hparams
        return float(schedule_or_constant(h.clip_param_schedule, h.clip_param)(env_step))

    def on_train_epoch_start(self) -> None:
        steps = self.num_env_steps_sampled_lifetime
        coeff = self._entropy_schedule(steps)
        clip_param = self._clip_param_at(steps)
        for module in self.policies.values():
            if isinstance(module, PPOModule | RecurrentPPOModule | RLModulePPOModule):
                module.entropy_coeff.fill_(coeff)
                if module.loss_config.clip_param != clip_param:
                    module.loss_config = dataclasses.replace(module.loss_config, clip_param=clip_param)
        self._iteration_kl = {}

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """Every minibatch update of the iteration (an :class:`IterationBatch`); a DataModule
        that yields single minibatches gets one update per step."""
        minibatches = batch.minibatches() if isinstance(batch, IterationBatch) else (batch,)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        schedulers = self.lr_schedulers()
        schedulers = (
            [] if schedulers is None else schedulers if isinstance(schedulers, list) else [schedulers]
        )
        guard = self._non_finite_guard
        for minibatch in minibatches:
            guard.start_batch(minibatch)
            loss = self.minibatch_loss(minibatch)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            # Each step runs on_before_optimizer_step: the non-finite guard, then the clip.
            for optimizer in optimizers:
                optimizer.step()
            for scheduler in schedulers:
                scheduler.step()

    def minibatch_loss(self, batch: Any) -> torch.Tensor:
        """The summed loss of the trained policies on one minibatch; collects their stats."""
        use_kl = self.hparams.use_kl_loss
        total = None
        for policy_id, policy_batch in self.policy_batches(batch):
            loss, stats = self.compute_policy_loss(policy_id, policy_batch)
            if use_kl:
                self._iteration_kl.setdefault(policy_id, []).append(stats["kl"].detach())
            self.accumulate_learner_metrics(stats, policy_id)
            total = loss if total is None else total + loss
        return self.zero_loss() if total is None else total

    def compute_policy_loss(self, policy_id: str, batch: TensorDict) -> tuple[torch.Tensor, dict[str, Any]]:
        """One policy's loss and the stats to log; override to change PPO's loss.

        ``batch`` holds the minibatch under the keys of :class:`.loss.PPOLossKeys`;
        ``self.policies[policy_id]`` has the networks (``policy_net``, ``value_net`` or, for
        memory models, ``model``). See ``examples/ppo_custom_loss.py``.
        """
        return self.policies[policy_id].compute_loss(batch)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        for policy_id, kls in self._iteration_kl.items():
            mean_kl = float(torch.stack(kls).mean())
            adapt_kl_coeff(self.policies[policy_id].kl_coeff, mean_kl, self.hparams.kl_target)

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)  # the non-finite guard
        if not self.automatic_optimization:
            # Where Lightning clips under automatic optimisation: after the guard and, under fp16
            # mixed precision, after the loss scaler unscaled the gradients.
            self.configure_gradient_clipping(optimizer)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clip to ``grad_clip`` as ``grad_clip_by`` says. Under manual optimisation (PPO's default) the
        Trainer's ``gradient_clip_val`` is refused by Lightning: ``grad_clip`` is the setting."""
        clip_gradients(
            self, optimizer, *resolve_clip(self.hparams, gradient_clip_val, gradient_clip_algorithm)
        )

    def build_optimizers(self) -> Any:
        optimizer = self.adam(self.parameters(), lr=self.hparams.lr, eps=1e-5)
        if self._lr_schedule is None:
            return optimizer
        base = self.hparams.lr
        schedule = self._lr_schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda _: schedule(self.num_env_steps_sampled_lifetime) / base
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
