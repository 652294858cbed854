"""The shared base of replay-based algorithms (DQN, SAC): replay settings, updates, target networks.

One gradient update of every trained policy per replayed minibatch (a ``training_step`` gets
a group of them: see :meth:`~lightning_rl.data.transition_replay.ReplayDataModule.minibatch_groups`): the
module's ``compute_loss`` returns one loss (SAC: critic + actor + temperature losses, whose
gradients reach disjoint parameter groups), and Lightning's manual optimisation runs
``zero_grad``/``manual_backward``/``step`` on the policy's optimizer, so nothing else
(closures, per-optimizer hooks) sits on the per-update path. After each update the TD errors go back to
the replay buffer (prioritized replay) and the target networks follow RLlib's rule: every
``target_network_update_freq`` env steps sampled (0: after every update), move them ``tau`` of
the way to the online networks (``tau=1``: copy).
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import torch

from lightning_rl.algorithms.base import Algorithm
from lightning_rl.algorithms.gradient_clipping import check_grad_clip, clip_gradients, resolve_clip
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.data.n_step import STEPS_KEY
from lightning_rl.data.replay_schedule import updates_per_iteration
from lightning_rl.data.transition_replay import ReplayDataModule, resolve_replay_buffer_config
from lightning_rl.errors import ConfigError


def discounts(batch, gamma: float) -> torch.Tensor:
    """``gamma ** k`` per transition (``k = steps_to_next_obs`` after n-step, else 1), shape ``[B]``."""
    steps = batch.get(STEPS_KEY, None)
    if steps is None:
        return torch.full(batch.batch_size, gamma, device=batch.device)
    return torch.pow(gamma, steps.reshape(-1).to(torch.float32))


def weighted_mean(values: torch.Tensor, batch) -> torch.Tensor:
    """Mean over the minibatch; with prioritized replay, weighted by the importance weights and
    normalised by their sum (torchrl's reduction: ``sum(w * x) / sum(w)``)."""
    weights = batch.get("priority_weight", None)
    if weights is None:
        return values.mean()
    weights = weights.reshape(values.shape[-1:]).to(values.dtype)
    return (values * weights).sum(-1) / weights.sum()


def soft_update_(target: list[torch.Tensor], online: list[torch.Tensor], tau: float) -> None:
    """``target <- (1 - tau) target + tau online`` for all tensors in one fused call (``tau=1``: copy).

    torchrl's ``SoftUpdate``/``HardUpdate`` need a torchrl ``LossModule``; the fused foreach
    call does the same arithmetic (see ``benchmarks/off_policy_update_cost.py`` for the cost).
    """
    with torch.no_grad():
        if tau >= 1.0:
            torch._foreach_copy_(target, online)
        else:
            torch._foreach_lerp_(target, online, tau)


class OffPolicyModule(PolicyModule):
    """A policy module that learns from replayed minibatches and keeps target networks."""

    @abc.abstractmethod
    def compute_loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(loss to minimise, per-sample TD errors for prioritized replay, stats to log)."""

    @abc.abstractmethod
    def update_targets(self, tau: float) -> None:
        """Move the target networks ``tau`` of the way towards the online ones."""

    def after_update(self) -> None:
        """Called after each optimizer step (e.g. to draw new noise for noisy layers)."""


class OffPolicyAlgorithm(Algorithm):
    """Replay settings (RLlib's names) and the manual-optimisation update loop.

    Args:
        replay_buffer_config: ``{"type": "ReplayBuffer" | "PrioritizedReplayBuffer", "capacity",
            "alpha", "beta", "eps"}`` (RLlib's keys; missing ones take the algorithm's defaults).
        checkpoint_replay_buffer: keep the replay buffers in checkpoints, so a resumed run
            continues with the experience it had.
        num_steps_sampled_before_learning_starts: env steps sampled before the first update
            (the first iteration samples them all, then learns).
        training_intensity: replayed steps per sampled step (None: one update per iteration).
        n_step: steps summed into each transition's return before bootstrapping.
        tau: target network update rate (1.0: hard copy).
        target_network_update_freq: env steps sampled between target updates (0: every update).
        grad_clip: gradient clip per optimizer (None: off), applied as ``grad_clip_by`` says.
        grad_clip_by: ``"global_norm"`` (the gradients' joint L2 norm; RLlib's default),
            ``"norm"`` (each parameter's own L2 norm) or ``"value"`` (each element).
        train_batch_size: transitions per replayed minibatch.

    See :class:`~lightning_rl.algorithms.Algorithm` for env, runner, evaluation and model args.
    """

    datamodule_class: ClassVar[type[ReplayDataModule]] = ReplayDataModule
    # Per-algorithm defaults merged under the user's replay_buffer_config.
    replay_buffer_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        replay_buffer_config: dict | None = None,
        checkpoint_replay_buffer: bool = False,
        num_steps_sampled_before_learning_starts: int = 1000,
        training_intensity: float | None = None,
        n_step: int = 1,
        tau: float = 1.0,
        target_network_update_freq: int = 0,
        grad_clip: float | None = None,
        grad_clip_by: str = "global_norm",
        **kwargs: Any,
    ) -> None:
        super().__init__(env, env_config, **kwargs)
        self.automatic_optimization = False
        # Counters that checkpoints carry with the weights.
        self.register_buffer("num_grad_updates_lifetime", torch.zeros((), dtype=torch.int64))
        self.register_buffer("last_target_update_env_steps", torch.zeros((), dtype=torch.int64))

    # -- validation --------------------------------------------------------------------------
    def validate_hparams(self) -> None:
        h = self.hparams
        # The complete buffer config (this algorithm's defaults filled in) is what the
        # DataModule and checkpoints see. Filled in here, not in __init__: LightningCLI
        # records the arguments as given.
        h["replay_buffer_config"] = resolve_replay_buffer_config(
            h.replay_buffer_config, self.replay_buffer_defaults
        ).to_dict()
        capacity = h.replay_buffer_config["capacity"]
        if capacity < h.train_batch_size:
            raise ConfigError(
                f"replay_buffer_config capacity ({capacity}) is smaller than train_batch_size "
                f"({h.train_batch_size}): the buffer could never hold one minibatch. Raise the capacity or "
                "lower train_batch_size."
            )
        starts = h.num_steps_sampled_before_learning_starts
        if not isinstance(starts, int) or isinstance(starts, bool) or starts < 0:
            raise ConfigError(
                f"num_steps_sampled_before_learning_starts must be an integer >= 0, got {starts!r}."
            )
        if not isinstance(h.n_step, int) or isinstance(h.n_step, bool) or h.n_step < 1:
            raise ConfigError(f"n_step must be an integer >= 1, got {h.n_step!r}.")
        if h.n_step > 1 and getattr(self, "is_multi_agent", False):
            raise ConfigError(
                f"n_step={h.n_step} needs time-ordered [num_envs, T] batches, but multi-agent batches are "
                "flat per policy; use n_step=1 with a MultiAgentEnv."
            )
        if isinstance(h.tau, bool) or not isinstance(h.tau, int | float) or not 0.0 < h.tau <= 1.0:
            raise ConfigError(f"tau must be in (0, 1] (1.0 copies the online network), got {h.tau!r}.")
        freq = h.target_network_update_freq
        if not isinstance(freq, int) or isinstance(freq, bool) or freq < 0:
            raise ConfigError(f"target_network_update_freq must be an integer >= 0, got {freq!r}.")
        check_grad_clip(h.grad_clip, h.grad_clip_by)
        self._validate_training_intensity()

    def _validate_training_intensity(self) -> None:
        h = self.hparams
        intensity = h.training_intensity
        if intensity is None:
            return
        if isinstance(intensity, bool) or not isinstance(intensity, int | float) or intensity <= 0:
            raise ConfigError(f"training_intensity must be a positive number or None, got {intensity!r}.")
        width = max(1, h.num_env_runners) * h.num_envs_per_env_runner
        fragment = h.rollout_fragment_length
        if fragment == "auto":
            fragment = math.ceil(h.train_batch_size / width)
        steps = fragment * width
        rate = updates_per_iteration(intensity, steps, h.train_batch_size)
        if rate < 1:
            needed = math.ceil(h.train_batch_size / intensity)
            raise ConfigError(
                f"training_intensity={intensity} with {steps} env steps sampled per iteration and "
                f"train_batch_size={h.train_batch_size} gives {float(rate):.3g} gradient updates per "
                f"iteration; every iteration must make at least one. Sample >= {needed} env steps per "
                "iteration (rollout_fragment_length x num_envs_per_env_runner x max(1, num_env_runners)) "
                "or raise training_intensity."
            )

    # -- what subclasses provide -------------------------------------------------------------
    @abc.abstractmethod
    def build_policy_optimizer(self, policy_id: str) -> torch.optim.Optimizer:
        """The optimizer of one policy's module (parameter groups for separate learning rates)."""

    # -- optimisation ------------------------------------------------------------------------
    def build_optimizers(self) -> Any:
        return [self.build_policy_optimizer(policy_id) for policy_id in self.policy_ids]

    def policy_optimizer(self, policy_id: str) -> Any:
        """The (Lightning-wrapped) optimizer of one policy."""
        optimizers = self.optimizers()
        if not isinstance(optimizers, list):
            return optimizers
        return optimizers[self.policy_ids.index(policy_id)]

    def optimizer_step(self, optimizer: Any, loss: torch.Tensor) -> None:
        """zero_grad, backward (through Lightning: precision, DDP), clip, step."""
        # Reusing the gradient buffers is cheaper than reallocating them for small networks.
        optimizer.zero_grad(set_to_none=False)
        self.manual_backward(loss)
        clip_gradients(self, optimizer, *resolve_clip(self.hparams))
        optimizer.step()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """A group of gradient updates: minibatch ``i`` of every policy's ``[K, B]`` group, in turn."""
        groups = [(pid, group.unbind(0)) for pid, group in self.policy_batches(batch)]
        for i in range(len(groups[0][1]) if groups else 0):
            for policy_id, minibatches in groups:
                self._update_policy(policy_id, minibatches[i])
            self.num_grad_updates_lifetime += 1
            self._maybe_update_targets()

    def _update_policy(self, policy_id: str, minibatch: Any) -> None:
        module = self.policies[policy_id]
        loss, td_error, stats = module.compute_loss(minibatch)
        self.optimizer_step(self.policy_optimizer(policy_id), loss)
        module.after_update()
        experience = self.experience
        # A skipped (non-finite) update's TD errors would write NaN priorities into the tree.
        if experience.prioritized and not self._non_finite_guard.last_step_skipped:
            experience.update_priorities(policy_id, minibatch["index"], td_error)
        self.accumulate_learner_metrics(stats, policy_id)

    def _maybe_update_targets(self) -> None:
        steps = self.num_env_steps_sampled_lifetime
        if steps - int(self.last_target_update_env_steps) >= self.hparams.target_network_update_freq:
            tau = float(self.hparams.tau)
            for policy_id in self.policies_to_train:
                self.policies[policy_id].update_targets(tau)
            self.last_target_update_env_steps.fill_(steps)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_iteration_metric("num_grad_updates_lifetime", float(self.num_grad_updates_lifetime))
