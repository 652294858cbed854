"""Conservative Q-Learning (Kumar et al., 2020) on torchrl's ``CQLLoss`` and ``DiscreteCQLLoss``.

Continuous actions: SAC's tanh-squashed Gaussian actor and twin Q(s, a) critics, plus the CQL
regulariser that pushes Q down on actions the data does not support (``min_q_weight`` times
``logsumexp`` over random, current-policy and next-policy actions minus Q of the data's
action). For the first ``bc_iters`` updates the actor is trained by behaviour cloning
(RLlib's schedule), then by the SAC actor loss. Discrete actions: a Q-network (DQN's) with
the discrete CQL regulariser ``logsumexp_a Q(s, a) - Q(s, a_data)``; the runners act greedily.

One ``training_step`` is one update. The actor, critic and temperature losses reach disjoint
parameters (torchrl detaches the rest), so their sum is back-propagated once and one Adam
over three parameter groups (each at its own rate) steps them all; the Lagrangian ``alpha'``
gets its own gradient (its loss is the negative of a critic term). Target critics follow
with Polyak averaging (``tau``) after every update.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, QValueActor, ValueOperator
from torchrl.modules.distributions import TanhNormal
from torchrl.objectives import CQLLoss, DiscreteCQLLoss, SoftUpdate

from lightning_rl.algorithms.offline import OfflineAlgorithm
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.modules.encoders import mlp
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicySpec
from lightning_rl.modules.q_networks import EpsilonGreedyQPolicy, QNetwork
from lightning_rl.modules.sac_networks import (
    SquashedGaussianActor,
    SquashedGaussianPolicy,
    bounded_box,
    vector_size,
)
from lightning_rl.offline.rows import OfflineRequirements


class _LocScale(nn.Module):
    """The squashed actor's ``(loc, log_std)`` as the ``(loc, scale)`` torchrl's ``TanhNormal`` takes."""

    def __init__(self, actor: SquashedGaussianActor) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_std = self.actor(obs)
        return loc, log_std.exp()


class _QValue(nn.Module):
    """``Q(s, a)`` from the concatenated observation and action, shape ``[B, 1]``."""

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, config: DefaultModelConfig
    ) -> None:
        super().__init__()
        size = vector_size(observation_space, "CQL's Q-network") + int(action_space.shape[0])
        hiddens = list(config.fcnet_hiddens) + list(config.head_fcnet_hiddens)
        self.net = mlp(size, hiddens, config.fcnet_activation, 1, orthogonal=config.orthogonal_init)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1))


class CQLModule(PolicyModule):
    """Continuous CQL: SAC's squashed Gaussian actor, twin critics, torchrl's ``CQLLoss``."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        gamma: float,
        tau: float,
        initial_alpha: float,
        target_entropy: str | float,
        temperature: float,
        num_actions: int,
        min_q_weight: float,
        deterministic_backup: bool,
        lagrangian: bool,
        lagrangian_thresh: float,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        box = bounded_box(action_space, "Continuous CQL")
        self.actor = SquashedGaussianActor(observation_space, action_space, model_config)
        low = torch.as_tensor(box.low, dtype=torch.float32)
        high = torch.as_tensor(box.high, dtype=torch.float32)
        spec = Bounded(low, high, shape=box.shape, dtype=torch.float32)
        policy = ProbabilisticActor(
            TensorDictModule(_LocScale(self.actor), in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"],
            spec=spec,
            distribution_class=TanhNormal,
            distribution_kwargs={"low": low, "high": high},
        )
        critic = ValueOperator(
            _QValue(observation_space, action_space, model_config), in_keys=["observation", "action"]
        )
        self.loss = CQLLoss(
            policy,
            critic,
            loss_function="l2",
            alpha_init=float(initial_alpha),
            target_entropy=target_entropy,
            action_spec=spec,
            temperature=float(temperature),
            min_q_weight=float(min_q_weight),
            deterministic_backup=bool(deterministic_backup),
            num_random=int(num_actions),
            with_lagrange=bool(lagrangian),
            lagrange_thresh=float(lagrangian_thresh),
        )
        self.loss.make_value_estimator(gamma=float(gamma))
        self.target_updater = SoftUpdate(self.loss, tau=float(tau))
        self.lagrangian = bool(lagrangian)

    def policy_spec(self) -> PolicySpec:
        return self.runner_policy_spec(SquashedGaussianPolicy)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.actor.state_dict()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {
            "actor": list(self.loss.actor_network_params.values(True, True)),
            "critic": list(self.loss.qvalue_network_params.values(True, True)),
            "alpha": [self.loss.log_alpha],
        }
        if self.lagrangian:
            groups["alpha_prime"] = [self.loss.log_alpha_prime]
        return groups

    def compute_loss(self, batch: TensorDict, behaviour_cloning: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        out = self.loss(batch)
        actor_loss = out["loss_actor_bc"] if behaviour_cloning else out["loss_actor"]
        total = actor_loss + out["loss_qvalue"] + out["loss_cql"] + out["loss_alpha"]
        stats = {
            "actor_loss": actor_loss,
            "critic_loss": out["loss_qvalue"],
            "cql_loss": out["loss_cql"],
            "alpha_loss": out["loss_alpha"],
            "alpha": out["alpha"],
            "entropy": out["entropy"],
        }
        if self.lagrangian:
            # alpha' rises while the CQL gap exceeds the threshold; its loss must not train the critics.
            (grad,) = torch.autograd.grad(
                out["loss_alpha_prime"], [self.loss.log_alpha_prime], retain_graph=True
            )
            self._alpha_prime_grad = grad
            stats["alpha_prime_loss"] = out["loss_alpha_prime"]
        return total, stats

    def after_backward(self) -> None:
        if self.lagrangian:
            self.loss.log_alpha_prime.grad = self._alpha_prime_grad

    def update_targets(self) -> None:
        self.target_updater.step()


class DiscreteCQLModule(PolicyModule):
    """Discrete CQL: a Q-network and torchrl's ``DiscreteCQLLoss``; greedy runner policy."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        gamma: float,
        tau: float,
        min_q_weight: float,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        self.q_net = QNetwork(observation_space, action_space, model_config)
        actor = QValueActor(self.q_net, in_keys=["observation"], action_space="categorical")
        self.loss = DiscreteCQLLoss(actor, loss_function="l2", delay_value=True, action_space="categorical")
        self.loss.make_value_estimator(gamma=float(gamma))
        self.target_updater = SoftUpdate(self.loss, tau=float(tau))
        self.min_q_weight = float(min_q_weight)

    def policy_spec(self) -> PolicySpec:
        return self.runner_policy_spec(EpsilonGreedyQPolicy)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.q_net.state_dict()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"critic": list(self.loss.value_network_params.values(True, True))}

    def compute_loss(self, batch: TensorDict, behaviour_cloning: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        batch = batch.clone(False)
        batch["action"] = batch["action"].long()
        out = self.loss(batch)
        total = out["loss_qvalue"] + self.min_q_weight * out["loss_cql"]
        stats = {
            "critic_loss": out["loss_qvalue"],
            "cql_loss": out["loss_cql"],
            "qf_mean": out["pred_value"],
            "target_value_mean": out["target_value"],
        }
        return total, stats

    def after_backward(self) -> None:
        """Nothing beyond the summed loss."""

    def update_targets(self) -> None:
        self.target_updater.step()


class CQL(OfflineAlgorithm):
    """Conservative Q-Learning from offline data (RLlib's names and defaults).

    Args:
        actor_lr, critic_lr, alpha_lr: learning rates of the actor, the critics and the entropy
            temperature (None: ``lr``).
        initial_alpha: starting entropy temperature.
        target_entropy: ``"auto"`` (``-action_dim``) or a number.
        tau: target critic update rate after every update.
        bc_iters: updates at the start in which the actor clones the data's actions instead of
            maximising Q (continuous actions).
        temperature: CQL temperature of the logsumexp.
        num_actions: random and policy actions per state in the CQL regulariser.
        min_q_weight: weight of the CQL regulariser.
        deterministic_backup: no entropy term in the critic's target.
        lagrangian: tune the regulariser's weight by dual gradient descent (``alpha'``).
        lagrangian_thresh: the target action gap of the Lagrangian form.
        grad_clip: global gradient-norm clip (None: off).

    See :class:`~lightning_rl.algorithms.offline.OfflineAlgorithm` for the data settings.
    """

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        lr: float = 3e-4,
        actor_lr: float | None = 1e-4,
        critic_lr: float | None = 3e-4,
        alpha_lr: float | None = 3e-4,
        gamma: float = 0.99,
        train_batch_size: int = 256,
        initial_alpha: float = 1.0,
        target_entropy: str | float = "auto",
        tau: float = 5e-3,
        bc_iters: int = 20_000,
        temperature: float = 1.0,
        num_actions: int = 10,
        min_q_weight: float = 5.0,
        deterministic_backup: bool = True,
        lagrangian: bool = False,
        lagrangian_thresh: float = 5.0,
        grad_clip: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(env, env_config, lr=lr, gamma=gamma, train_batch_size=train_batch_size, **kwargs)
        self.automatic_optimization = False

    def validate_hparams(self) -> None:
        super().validate_hparams()
        h = self.hparams
        for name in ("actor_lr", "critic_lr", "alpha_lr"):
            if h[name] is not None:
                self.require_positive(**{name: h[name]})
        self.require_positive(
            initial_alpha=h.initial_alpha, temperature=h.temperature, num_actions=h.num_actions, tau=h.tau
        )
        if not 0.0 < float(h.tau) <= 1.0:
            raise ConfigError(f"tau must be in (0, 1], got {h.tau!r}.")
        if isinstance(h.bc_iters, bool) or not isinstance(h.bc_iters, int) or h.bc_iters < 0:
            raise ConfigError(f"bc_iters must be an integer >= 0, got {h.bc_iters!r}.")
        if h.min_q_weight < 0:
            raise ConfigError(f"min_q_weight must be >= 0, got {h.min_q_weight!r}.")
        target = h.target_entropy
        if target != "auto" and (isinstance(target, bool) or not isinstance(target, int | float)):
            raise ConfigError(f"target_entropy must be 'auto' or a number, got {target!r}.")
        if h.grad_clip is not None and h.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be positive or None, got {h.grad_clip!r}.")

    def offline_requirements(self) -> OfflineRequirements:
        return OfflineRequirements(next_observation=True, gamma=float(self.hparams.gamma))

    def build_policy_module(self, policy_id: str, observation_space, action_space) -> PolicyModule:
        h = self.hparams
        if isinstance(action_space, spaces.Discrete):
            return DiscreteCQLModule(
                observation_space,
                action_space,
                self.model_config,
                gamma=h.gamma,
                tau=h.tau,
                min_q_weight=h.min_q_weight,
            )
        if not isinstance(action_space, spaces.Box):
            raise SpaceError(f"CQL needs a 1-D Box or a Discrete action space, got {action_space}.")
        target = h.target_entropy
        return CQLModule(
            observation_space,
            action_space,
            self.model_config,
            gamma=h.gamma,
            tau=h.tau,
            initial_alpha=h.initial_alpha,
            target_entropy=-float(math.prod(action_space.shape)) if target == "auto" else float(target),
            temperature=h.temperature,
            num_actions=h.num_actions,
            min_q_weight=h.min_q_weight,
            deterministic_backup=h.deterministic_backup,
            lagrangian=h.lagrangian,
            lagrangian_thresh=h.lagrangian_thresh,
        )

    def build_optimizers(self) -> Any:
        h = self.hparams
        rates = {"actor": h.actor_lr, "critic": h.critic_lr, "alpha": h.alpha_lr, "alpha_prime": h.critic_lr}
        groups = []
        for module in self.policies.values():
            if getattr(module, "trainable", True):
                for name, params in module.parameter_groups().items():
                    groups.append({"params": params, "lr": rates[name] or h.lr})
        return self.adam(groups, lr=h.lr)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers()
        behaviour_cloning = self.global_step < int(self.hparams.bc_iters)
        losses, modules = [], []
        for policy_id, policy_batch in self.policy_batches(batch):
            module = self.policies[policy_id]
            loss, stats = module.compute_loss(policy_batch, behaviour_cloning)
            self.accumulate_learner_metrics(stats, policy_id)
            losses.append(loss)
            modules.append(module)
        total = sum(losses) if losses else self.zero_loss()
        optimizer.zero_grad()
        self.manual_backward(total)
        for module in modules:
            module.after_backward()
        if self.hparams.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm"
            )
        optimizer.step()
        for module in modules:
            module.update_targets()
