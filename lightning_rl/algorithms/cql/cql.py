"""Conservative Q-Learning (Kumar et al., 2020): the LightningModule and its per-policy networks.

Continuous actions: SAC's tanh-squashed Gaussian actor and twin Q(s, a) critics, plus the CQL
regulariser that pushes Q down on actions the data does not support (``min_q_weight`` times
``logsumexp`` over random, current-policy and next-policy actions minus Q of the data's
action). For the first ``bc_iters`` updates the actor is trained by behaviour cloning
(RLlib's schedule), then by the SAC actor loss. Discrete actions: a Q-network (DQN's) with
the discrete CQL regulariser ``logsumexp_a Q(s, a) - Q(s, a_data)``; the runners act greedily.
The objectives are written out in :mod:`lightning_rl.algorithms.cql.loss`.

One ``training_step`` is one update. The actor, critic, temperature (and Lagrangian
``alpha'``) losses reach disjoint parameters, so their sum is back-propagated once and one
Adam over the parameter groups (each at its own rate) steps them all. Target critics follow
with Polyak averaging (``tau``) after every update.

Checkpoints written while CQL ran on torchrl's ``CQLLoss``/``DiscreteCQLLoss`` (their weights
under ``loss.*``) load into these modules: :func:`_from_torchrl_keys` renames them on load.
Their optimizer state does not fit the new parameter groups: resume such a run with fresh
optimizers (load the weights, then ``fit`` without ``ckpt_path``).
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces
from tensordict import TensorDict
from torch import nn

from lightning_rl.algorithms.cql.loss import (
    CQLLossConfig,
    DiscreteCQLLossConfig,
    cql_loss,
    discrete_cql_loss,
)
from lightning_rl.algorithms.gradient_clipping import check_grad_clip, clip_gradients, resolve_clip
from lightning_rl.algorithms.off_policy import soft_update_
from lightning_rl.algorithms.offline import OfflineAlgorithm
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicySpec
from lightning_rl.modules.q_networks import EpsilonGreedyQPolicy, QNetwork
from lightning_rl.modules.sac_networks import (
    ContinuousQEnsemble,
    SquashedGaussianActor,
    SquashedGaussianPolicy,
    bounded_box,
    vector_size,
)
from lightning_rl.offline.rows import OfflineRequirements

_TORCHRL_CRITIC = re.compile(r"loss\.(target_)?qvalue_network_params\.module\.net\.(\d+)\.(weight|bias)")


def _from_torchrl_keys(state_dict: dict[str, Any], prefix: str, renames: dict[str, str]) -> None:
    """Rename the weights a torchrl-loss CQL module saved under ``loss.*`` (in place).

    ``renames`` maps old names (after ``prefix``) to new ones; the twin critics' stacked
    ``[2, out, in]`` linear layers become :class:`EnsembleMLP`'s ``[2, in, out]`` weights and
    ``[2, 1, out]`` biases. Other ``loss.*`` entries (torchrl's copies of the actor, its
    constants) are dropped: the module holds them already.
    """
    old = [key for key in state_dict if key.startswith(prefix + "loss.")]
    if not old:
        return
    layers: dict[bool, list[int]] = {False: [], True: []}
    for key in old:
        match = _TORCHRL_CRITIC.fullmatch(key[len(prefix) :])
        if match and match.group(3) == "weight":
            layers[bool(match.group(1))].append(int(match.group(2)))
    for key in old:
        value = state_dict.pop(key)
        name = key[len(prefix) :]
        match = _TORCHRL_CRITIC.fullmatch(name)
        if match and value.dim() != (3 if match.group(3) == "weight" else 2):
            state_dict[key] = value  # not a stacked twin critic: left for load_state_dict to refuse
        elif match:
            target, index, kind = bool(match.group(1)), int(match.group(2)), match.group(3)
            layer = sorted(layers[target]).index(index)
            group = "weights" if kind == "weight" else "biases"
            new = f"{'target_critic' if target else 'critic'}.net.{group}.{layer}"
            state_dict[prefix + new] = value.transpose(1, 2) if kind == "weight" else value.unsqueeze(1)
        elif name in renames:
            state_dict[prefix + renames[name]] = value
        else:
            for old_prefix, new_prefix in renames.items():
                if old_prefix.endswith(".") and name.startswith(old_prefix):
                    state_dict[prefix + new_prefix + name[len(old_prefix) :]] = value


class CQLModule(PolicyModule):
    """Continuous CQL: SAC's squashed Gaussian actor and twin critics, CQL's loss."""

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
        bounded_box(action_space, "Continuous CQL")
        vector_size(observation_space, "CQL's Q-network")
        self.actor = SquashedGaussianActor(observation_space, action_space, model_config)
        self.critic = ContinuousQEnsemble(observation_space, action_space, model_config, num_q=2)
        self.target_critic = copy.deepcopy(self.critic)
        self.target_critic.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial_alpha)))
        self.register_buffer("target_entropy", torch.tensor(float(target_entropy)))
        # alpha' = exp(0) = 1 at the start, as in RLlib and torchrl.
        self.log_alpha_prime = nn.Parameter(torch.tensor(0.0)) if lagrangian else None
        self.tau = float(tau)
        self.loss_config = CQLLossConfig(
            gamma=float(gamma),
            temperature=float(temperature),
            num_actions=int(num_actions),
            min_q_weight=float(min_q_weight),
            deterministic_backup=bool(deterministic_backup),
            lagrangian=bool(lagrangian),
            lagrangian_thresh=float(lagrangian_thresh),
        )
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.target_critic.parameters())

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        renames = {
            "loss.log_alpha": "log_alpha",
            "loss.log_alpha_prime": "log_alpha_prime",
            "loss.target_entropy_buffer": "target_entropy",
        }
        _from_torchrl_keys(state_dict, prefix, renames)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def policy_spec(self) -> PolicySpec:
        return self.runner_policy_spec(SquashedGaussianPolicy)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.actor.state_dict()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {
            "actor": list(self.actor.parameters()),
            "critic": self._critic_params,
            "alpha": [self.log_alpha],
        }
        if self.log_alpha_prime is not None:
            groups["alpha_prime"] = [self.log_alpha_prime]
        return groups

    def compute_loss(self, batch: TensorDict, behaviour_cloning: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        """CQL's loss (:func:`.loss.cql_loss`): ``(total, stats)``."""
        return cql_loss(
            self.actor,
            self.critic,
            self.target_critic,
            batch,
            log_alpha=self.log_alpha,
            target_entropy=self.target_entropy,
            log_alpha_prime=self.log_alpha_prime,
            behaviour_cloning=behaviour_cloning,
            config=self.loss_config,
        )

    def update_targets(self) -> None:
        soft_update_(self._target_params, self._critic_params, self.tau)


class DiscreteCQLModule(PolicyModule):
    """Discrete CQL: a Q-network and its target, CQL's discrete loss; greedy runner policy."""

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
        self.target_q_net = copy.deepcopy(self.q_net)
        self.target_q_net.requires_grad_(False)
        self.tau = float(tau)
        self.loss_config = DiscreteCQLLossConfig(gamma=float(gamma), min_q_weight=float(min_q_weight))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        renames = {"loss.target_value_network_params.module.0.module.": "target_q_net."}
        _from_torchrl_keys(state_dict, prefix, renames)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def policy_spec(self) -> PolicySpec:
        return self.runner_policy_spec(EpsilonGreedyQPolicy)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.q_net.state_dict()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"critic": list(self.q_net.parameters())}

    def compute_loss(self, batch: TensorDict, behaviour_cloning: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        """Discrete CQL's loss (:func:`.loss.discrete_cql_loss`): ``(total, stats)``."""
        return discrete_cql_loss(self.q_net, self.target_q_net, batch, self.loss_config)

    def update_targets(self) -> None:
        soft_update_(list(self.target_q_net.parameters()), list(self.q_net.parameters()), self.tau)


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
        grad_clip: gradient clip (None: off), applied as ``grad_clip_by`` says.
        grad_clip_by: ``"global_norm"`` (the gradients' joint L2 norm; RLlib's default),
            ``"norm"`` (each parameter's own L2 norm) or ``"value"`` (each element).

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
        grad_clip_by: str = "global_norm",
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
        check_grad_clip(h.grad_clip, h.grad_clip_by)

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
        clip_gradients(self, optimizer, *resolve_clip(self.hparams))
        optimizer.step()
        for module in modules:
            module.update_targets()
