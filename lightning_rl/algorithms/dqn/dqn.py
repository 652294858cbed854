"""DQN with RLlib's Rainbow switches, on the replay DataModule.

``double_q``, ``dueling``, ``n_step``, prioritized replay (``replay_buffer_config``), C51
(``num_atoms`` > 1 over ``[v_min, v_max]``), noisy nets (``noisy``, ``sigma0``), an
epsilon-greedy schedule over env steps sampled, and hard (``tau=1``) or soft target updates
every ``target_network_update_freq`` env steps. All switches on is Rainbow.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces
from tensordict import TensorDict

from lightning_rl.algorithms.dqn.loss import distributional_loss, q_learning_loss
from lightning_rl.algorithms.off_policy import OffPolicyAlgorithm, OffPolicyModule, soft_update_
from lightning_rl.data.n_step import n_step_transitions
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicySpec
from lightning_rl.modules.q_networks import EpsilonGreedyQPolicy, QNetwork
from lightning_rl.schedules import PiecewiseSchedule, check_non_negative_schedule, schedule_or_constant

TD_ERROR_LOSS_FNS = ("huber", "mse")
# RLlib's default: from fully random to 5% random actions over the first 10k env steps.
DEFAULT_EPSILON = ((0, 1.0), (10_000, 0.05))


class DQNModule(OffPolicyModule):
    """One policy's Q-network, its target copy, the n-step learner connector and the loss."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        gamma: float,
        n_step: int,
        double_q: bool,
        td_error_loss_fn: str,
        **q_network_kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        self.q_network_kwargs = dict(q_network_kwargs)
        self.q_net = QNetwork(observation_space, action_space, model_config, **q_network_kwargs)
        self.target_q_net = copy.deepcopy(self.q_net)
        self.target_q_net.requires_grad_(False)
        self.gamma = float(gamma)
        self.n_step = int(n_step)
        self.double_q = bool(double_q)
        self.td_error_loss_fn = td_error_loss_fn
        self.distributional = self.q_net.num_atoms > 1
        self.noisy = bool(self.q_net.noisy_layers)
        self._online = list(self.q_net.parameters())
        self._target = list(self.target_q_net.parameters())

    def policy_spec(self) -> PolicySpec:
        return PolicySpec(
            EpsilonGreedyQPolicy,
            {
                "observation_space": self.observation_space,
                "action_space": self.action_space,
                "model_config": self.model_config.to_dict(),
                **self.q_network_kwargs,
            },
        )

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.q_net.state_dict()

    def process_rollout(self, batch: TensorDict) -> TensorDict:
        return n_step_transitions(batch, self.n_step, self.gamma)

    def compute_loss(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        if self.distributional:
            return distributional_loss(
                self.q_net, self.target_q_net, batch, gamma=self.gamma, double_q=self.double_q
            )
        return q_learning_loss(
            self.q_net,
            self.target_q_net,
            batch,
            gamma=self.gamma,
            double_q=self.double_q,
            loss_fn=self.td_error_loss_fn,
        )

    def update_targets(self, tau: float) -> None:
        soft_update_(self._target, self._online, tau)

    def after_update(self) -> None:
        """New noise for the online and the target network (independent samples) after each update."""
        if self.noisy:
            self.q_net.reset_noise()
            self.target_q_net.reset_noise()


class DQN(OffPolicyAlgorithm):
    """Deep Q-learning with the Rainbow options (RLlib's names and defaults).

    Args:
        double_q: pick the bootstrap action with the online network (Double DQN).
        dueling: separate value and advantage streams.
        num_atoms: > 1 learns a categorical return distribution (C51) over ``[v_min, v_max]``.
        noisy: noisy head layers (exploration without epsilon; the schedule is then ignored).
        sigma0: initial noise scale of the noisy layers.
        epsilon: ``[[env_step, epsilon], ...]`` piecewise-linear exploration schedule (None:
            ``[[0, 1.0], [10000, 0.05]]``).
        td_error_loss_fn: ``"huber"`` or ``"mse"`` (C51 always uses cross-entropy).
        lr_schedule: ``[[env_step, lr], ...]`` piecewise-linear learning rate, set at the start
            of every iteration (None: ``lr`` throughout).

    See :class:`~lightning_rl.algorithms.off_policy.OffPolicyAlgorithm` for the replay settings.
    """

    replay_buffer_defaults = {"type": "PrioritizedReplayBuffer", "capacity": 50_000}

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        lr: float = 5e-4,
        gamma: float = 0.99,
        train_batch_size: int = 32,
        double_q: bool = True,
        dueling: bool = True,
        num_atoms: int = 1,
        v_min: float = -10.0,
        v_max: float = 10.0,
        noisy: bool = False,
        sigma0: float = 0.5,
        epsilon: list[list[float]] | None = None,
        td_error_loss_fn: str = "huber",
        num_steps_sampled_before_learning_starts: int = 1000,
        target_network_update_freq: int = 500,
        tau: float = 1.0,
        grad_clip: float | None = 40.0,
        lr_schedule: list[list[float]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            env,
            env_config,
            lr=lr,
            gamma=gamma,
            train_batch_size=train_batch_size,
            num_steps_sampled_before_learning_starts=num_steps_sampled_before_learning_starts,
            target_network_update_freq=target_network_update_freq,
            tau=tau,
            grad_clip=grad_clip,
            **kwargs,
        )
        self._epsilon = PiecewiseSchedule(self.hparams.epsilon)

    def validate_hparams(self) -> None:
        super().validate_hparams()
        h = self.hparams
        if h.epsilon is None:
            # Filled in here, not in __init__: LightningCLI records the arguments as given.
            h["epsilon"] = [list(point) for point in DEFAULT_EPSILON]
        if not isinstance(h.num_atoms, int) or isinstance(h.num_atoms, bool) or h.num_atoms < 1:
            raise ConfigError(f"num_atoms must be an integer >= 1, got {h.num_atoms!r}.")
        if h.num_atoms > 1 and not float(h.v_min) < float(h.v_max):
            raise ConfigError(f"v_min must be below v_max, got v_min={h.v_min!r}, v_max={h.v_max!r}.")
        if h.td_error_loss_fn not in TD_ERROR_LOSS_FNS:
            raise ConfigError(
                f"td_error_loss_fn must be one of {', '.join(TD_ERROR_LOSS_FNS)}, got {h.td_error_loss_fn!r}."
            )
        self.require_positive(sigma0=h.sigma0)
        PiecewiseSchedule(h.epsilon)
        check_non_negative_schedule("lr_schedule", h.lr_schedule)

    def build_policy_module(self, policy_id: str, observation_space, action_space) -> DQNModule:
        if not isinstance(action_space, spaces.Discrete):
            raise SpaceError(
                f"DQN needs a Discrete action space, got {action_space} (policy {policy_id!r}). "
                "For continuous actions use SAC."
            )
        h = self.hparams
        return DQNModule(
            observation_space,
            action_space,
            self.model_config,
            gamma=h.gamma,
            n_step=h.n_step,
            double_q=h.double_q,
            td_error_loss_fn=h.td_error_loss_fn,
            dueling=h.dueling,
            num_atoms=h.num_atoms,
            v_min=float(h.v_min),
            v_max=float(h.v_max),
            noisy=h.noisy,
            sigma0=float(h.sigma0),
        )

    # -- exploration -------------------------------------------------------------------------
    def current_epsilon(self) -> float:
        if self.hparams.noisy:
            return 0.0
        return float(self._epsilon(self.num_env_steps_sampled_lifetime))

    def policy_extra(self, policy_id: str) -> dict[str, Any]:
        return {**super().policy_extra(policy_id), "epsilon": self.current_epsilon()}

    # -- learning ----------------------------------------------------------------------------
    def build_policy_optimizer(self, policy_id: str) -> torch.optim.Optimizer:
        return self.adam(self.policies[policy_id].q_net.parameters(), lr=self.current_lr())

    def current_lr(self) -> float:
        """``lr_schedule`` at the env steps sampled so far (``lr`` without a schedule)."""
        h = self.hparams
        return float(schedule_or_constant(h.lr_schedule, h.lr)(self.num_env_steps_sampled_lifetime))

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.hparams.lr_schedule:
            lr = self.current_lr()
            optimizers = self.optimizers()
            for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
                for group in optimizer.param_groups:
                    group["lr"] = lr

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_iteration_metric("learners/epsilon", self.current_epsilon())
