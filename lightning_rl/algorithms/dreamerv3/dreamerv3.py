"""DreamerV3 (Hafner et al. 2023, "Mastering Diverse Domains through World Models").

A world model (RSSM with 32x32 categorical latents, symlog observation predictions, two-hot
rewards, a continue head; KL balancing with free bits) learns from replayed ``[B, T]``
windows; actor and critic learn entirely in its imagination (two-hot critic with a slow EMA
regulariser, returns normalised by their 5th-95th percentile range). See
:mod:`.world_model` and :mod:`.behavior` for the losses, :mod:`.runner_policy` for what the
EnvRunners run and :mod:`lightning_rl.data.sequence_replay` for the experience;
:class:`~lightning_rl.algorithms.dreamerv3.LogDreams` logs the world model's open-loop dreams.

Lightning: manual optimisation with three optimizers (world model, actor, critic), each with
its own learning rate, Adam epsilon and global-norm gradient clip. The three losses reach
disjoint parameters (imagination starts from stopped states; frozen weights where gradients
run through the dynamics), so one ``manual_backward`` over their sum serves all three and
works unchanged under DDP and Lightning's ``precision`` flag (``"bf16-mixed"`` on CPU runs
the large matmuls in bfloat16 on AMX/AVX-512 cores: an XS update with 16x64 windows took 0.48
instead of 0.77 s on the 2-core build machine; tiny debugging sizes are slower under autocast).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict

from lightning_rl.algorithms.base import Algorithm
from lightning_rl.algorithms.dreamerv3.behavior import Behavior
from lightning_rl.algorithms.dreamerv3.loss import DREAMER_KEYS, DreamerV3LossConfig, dreamer_losses
from lightning_rl.algorithms.dreamerv3.model_sizes import resolve_model_dims
from lightning_rl.algorithms.dreamerv3.runner_policy import DreamerV3Policy, action_dim, policy_weights
from lightning_rl.algorithms.dreamerv3.world_model import WorldModel, check_observation_space, is_image_space
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.data.replay_schedule import updates_per_iteration
from lightning_rl.data.sequence_replay import SequenceReplayDataModule
from lightning_rl.errors import ConfigError, SpaceError, unknown_name_message
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import PolicySpec

ACTOR_GRADIENTS = ("auto", "reinforce", "dynamics")


class DreamerV3Module(PolicyModule):
    """One policy's world model, actor, critic (and slow critic) and their losses."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
        *,
        model_size: str,
        model_overrides: dict[str, int] | None,
        symlog_obs: bool,
        return_normalization_decay: float,
    ) -> None:
        super().__init__(observation_space, action_space, model_config)
        self.dims = resolve_model_dims(model_size, model_overrides)
        self.model_size, self.model_overrides, self.symlog_obs = model_size, model_overrides, symlog_obs
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.action_dim = action_dim(action_space)
        self.world_model = WorldModel(observation_space, self.action_dim, self.dims, symlog_obs)
        self.behavior = Behavior(
            self.dims.feature_size,
            self.action_dim,
            self.discrete,
            self.dims,
            return_normalization_decay=return_normalization_decay,
        )

    # -- runner side ---------------------------------------------------------------------------
    def policy_spec(self) -> PolicySpec:
        return PolicySpec(
            DreamerV3Policy,
            {
                "observation_space": self.observation_space,
                "action_space": self.action_space,
                "model_size": self.model_size,
                "model_overrides": dict(self.model_overrides) if self.model_overrides else None,
                "symlog_obs": self.symlog_obs,
            },
        )

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return policy_weights(self.world_model.encoder, self.world_model.rssm, self.behavior.actor)

    # -- learner side --------------------------------------------------------------------------
    def model_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Stored actions as the model reads them: one-hot for discrete, floats for continuous."""
        if self.discrete:
            return torch.nn.functional.one_hot(actions.long(), self.action_dim).float()
        return actions.float()

    def compute_losses(
        self, window: TensorDict, config: DreamerV3LossConfig
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """World-model, actor and critic losses of one ``[B, T]`` window batch, and stats (:mod:`.loss`)."""
        actions = self.model_actions(window[DREAMER_KEYS.prev_action])
        return dreamer_losses(self.world_model, self.behavior, window, actions, config)

    @torch.no_grad()
    def open_loop_prediction(self, window: TensorDict, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The world model's view of replayed windows: observe ``context`` steps, then dream on
        with the replayed actions. Returns ``(truth, prediction)`` in the decoder's scale
        (symlog vectors, images in [-0.5, 0.5]), both ``[B, T, ...]``."""
        world_model = self.world_model
        rssm = world_model.rssm
        obs = window["observation"]
        actions = self.model_actions(window["prev_action"])
        is_first = window["is_first"].clone()
        h, z, _, _ = rssm.observe(
            world_model.encoder(obs[:, :context]), actions[:, :context], is_first[:, :context]
        )
        hs, zs = [h], [z]
        h, z = h[:, -1], z[:, -1]
        initial_h, initial_z = rssm.initial_state(h.shape[0])
        for t in range(context, obs.shape[1]):
            start = is_first[:, t].unsqueeze(-1)
            h, z = torch.where(start, initial_h, h), torch.where(start, initial_z, z)
            h = rssm.deter_step(h, z, rssm.in_action(actions[:, t].masked_fill(start, 0.0)))
            z = rssm.sample(rssm.prior_logits(h))
            hs.append(h.unsqueeze(1))
            zs.append(z.unsqueeze(1))
        features = torch.cat([torch.cat(hs, 1), torch.cat(zs, 1)], -1)
        return world_model.decoder_target(obs), world_model.decoder(features).float()


class DreamerV3(Algorithm):
    """DreamerV3 for vector and image observations, discrete and continuous actions (RLlib's names).

    Args:
        model_size: ``"XS"``, ``"S"``, ``"M"``, ``"L"``, ``"XL"`` (the paper's Table B.1), or RLlib's
            debugging sizes ``"nano"``, ``"micro"``, ``"mini"``, ``"XXS"``.
        model_overrides: replace single widths of the size (``gru_units``, ``dense_units``,
            ``dense_layers``, ``cnn_multiplier``, ``num_categoricals``, ``num_classes``).
        training_ratio: replayed steps per env step sampled (each update replays
            ``batch_size_B x batch_length_T`` steps); fixes the updates per iteration.
        batch_size_B: windows per update.
        batch_length_T: steps per window.
        horizon_H: imagination horizon.
        gamma: discount (the paper's 0.997, i.e. a horizon of ~333 steps).
        gae_lambda: lambda of the imagined lambda-returns.
        entropy_scale: the actor's entropy bonus (eta), on returns normalised to a ~[0, 1] range.
        return_normalization_decay: EMA decay of the return percentiles (5th, 95th).
        critic_ema_decay: EMA decay of the slow critic the critic is regularised towards.
        free_bits: KL below this many nats (summed over the latents) is not penalised.
        dynamics_loss_scale, representation_loss_scale: weights of the two KL terms (0.5, 0.1).
        world_model_lr, actor_lr, critic_lr: learning rates of the three Adam optimizers.
        world_model_grad_clip_by_global_norm, actor_grad_clip_by_global_norm,
        critic_grad_clip_by_global_norm: global-norm gradient clips per optimizer (None: off).
        symlog_obs: symlog vector observations in the encoder and decoder (``"auto"``: yes for
            vectors; images are scaled to [-0.5, 0.5] instead).
        actor_gradient: ``"reinforce"``, ``"dynamics"`` (backpropagation through the imagined
            dynamics), or ``"auto"``: REINFORCE for discrete, dynamics for continuous actions.
        replay_buffer_config: ``{"capacity": steps}`` (over all env copies of a learner; RLlib's
            ``type`` key is accepted as ``"EpisodeReplayBuffer"``).
        checkpoint_replay_buffer: keep the replayed steps in checkpoints.
        num_steps_sampled_before_learning_starts: env steps sampled before the first update (the
            first iteration samples them all, and at least one window per env copy).
        rollout_fragment_length: steps per env copy per iteration; ``"auto"``: the fewest that
            make one update per iteration (``batch_size_B x batch_length_T / training_ratio``).

    ``lr`` and ``train_batch_size`` of the base class are not used (the three learning rates
    above, and ``batch_size_B x batch_length_T`` replayed steps per update).
    See :class:`~lightning_rl.algorithms.Algorithm` for env, runner and evaluation args.
    """

    datamodule_class: ClassVar[type[SequenceReplayDataModule]] = SequenceReplayDataModule

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        model_size: str = "XS",
        model_overrides: dict[str, int] | None = None,
        training_ratio: float = 1024,
        batch_size_B: int = 16,
        batch_length_T: int = 64,
        horizon_H: int = 15,
        gamma: float = 0.997,
        gae_lambda: float = 0.95,
        entropy_scale: float = 3e-4,
        return_normalization_decay: float = 0.99,
        critic_ema_decay: float = 0.98,
        free_bits: float = 1.0,
        dynamics_loss_scale: float = 0.5,
        representation_loss_scale: float = 0.1,
        world_model_lr: float = 1e-4,
        actor_lr: float = 3e-5,
        critic_lr: float = 3e-5,
        world_model_grad_clip_by_global_norm: float | None = 1000.0,
        actor_grad_clip_by_global_norm: float | None = 100.0,
        critic_grad_clip_by_global_norm: float | None = 100.0,
        symlog_obs: bool | Literal["auto"] = "auto",
        actor_gradient: Literal["auto", "reinforce", "dynamics"] = "auto",
        replay_buffer_config: dict | None = None,
        checkpoint_replay_buffer: bool = False,
        num_steps_sampled_before_learning_starts: int = 1024,
        rollout_fragment_length: int | Literal["auto"] = "auto",
        metrics_num_episodes_for_smoothing: int = 100,
        **kwargs: Any,
    ) -> None:
        # The base's train_batch_size is derived (B x T replayed steps per update); a value passed
        # in (LightningCLI's default, a checkpoint's hyperparameters) is replaced, not rejected.
        kwargs["train_batch_size"] = (
            batch_size_B * batch_length_T
            if _positive_int(batch_size_B) and _positive_int(batch_length_T)
            else 1
        )
        super().__init__(
            env,
            env_config,
            gamma=gamma,
            rollout_fragment_length=rollout_fragment_length,
            metrics_num_episodes_for_smoothing=metrics_num_episodes_for_smoothing,
            **kwargs,
        )
        self.automatic_optimization = False
        self.register_buffer("num_grad_updates_lifetime", torch.zeros((), dtype=torch.int64))

    # -- validation --------------------------------------------------------------------------
    def validate_hparams(self) -> None:
        h = self.hparams
        if getattr(self, "is_multi_agent", False):
            raise ConfigError("DreamerV3 is single-agent: its world model predicts one agent's observations.")
        resolve_model_dims(h.model_size, h.model_overrides)
        for name in ("batch_size_B", "batch_length_T", "horizon_H"):
            if not _positive_int(h[name]):
                raise ConfigError(f"{name} must be a positive integer, got {h[name]!r}.")
        self.require_positive(
            training_ratio=h.training_ratio,
            world_model_lr=h.world_model_lr,
            actor_lr=h.actor_lr,
            critic_lr=h.critic_lr,
        )
        for name in ("gae_lambda", "return_normalization_decay", "critic_ema_decay"):
            value = h[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value!r}.")
        for name in ("entropy_scale", "free_bits", "dynamics_loss_scale", "representation_loss_scale"):
            value = h[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}.")
        for name in (
            "world_model_grad_clip_by_global_norm",
            "actor_grad_clip_by_global_norm",
            "critic_grad_clip_by_global_norm",
        ):
            value = h[name]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise ConfigError(f"{name} must be a positive number or None, got {value!r}.")
        if h.symlog_obs not in ("auto", True, False):
            raise ConfigError(f"symlog_obs must be 'auto', True or False, got {h.symlog_obs!r}.")
        if h.actor_gradient not in ACTOR_GRADIENTS:
            raise ConfigError(unknown_name_message("actor_gradient", str(h.actor_gradient), ACTOR_GRADIENTS))
        h["replay_buffer_config"] = _replay_buffer_config(h.replay_buffer_config)
        starts = h.num_steps_sampled_before_learning_starts
        if not isinstance(starts, int) or isinstance(starts, bool) or starts < 0:
            raise ConfigError(
                f"num_steps_sampled_before_learning_starts must be an integer >= 0, got {starts!r}."
            )
        self._validate_training_ratio()

    def _validate_training_ratio(self) -> None:
        h = self.hparams
        fragment = h.rollout_fragment_length
        if fragment == "auto":
            return
        width = max(1, h.num_env_runners) * h.num_envs_per_env_runner
        steps = fragment * width
        rate = updates_per_iteration(h.training_ratio, steps, h.batch_size_B * h.batch_length_T)
        if rate < 1:
            needed = -(-h.batch_size_B * h.batch_length_T // width) / h.training_ratio
            raise ConfigError(
                f"training_ratio={h.training_ratio} with {steps} env steps sampled per iteration and "
                f"{h.batch_size_B}x{h.batch_length_T} replayed steps per update gives {float(rate):.3g} "
                "updates per iteration; every iteration must make at least one. Use "
                f"rollout_fragment_length='auto' or >= {int(np.ceil(needed))}, or raise training_ratio."
            )

    # -- modules -----------------------------------------------------------------------------
    def build_policy_module(self, policy_id: str, observation_space, action_space) -> PolicyModule:
        h = self.hparams
        check_observation_space(observation_space)
        if isinstance(action_space, spaces.Box):
            bounded = (
                len(action_space.shape) == 1
                and np.all(action_space.low == -1.0)
                and np.all(action_space.high == 1.0)
            )
            if not bounded:
                raise SpaceError(
                    "DreamerV3's continuous actor acts in [-1, 1]: it needs a 1-D Box action space with "
                    "finite bounds and normalize_actions=True (the module-side action space is "
                    f"{action_space})."
                )
        elif not isinstance(action_space, spaces.Discrete):
            raise SpaceError(f"DreamerV3 supports Discrete and 1-D Box action spaces, got {action_space}.")
        symlog_obs = (not is_image_space(observation_space)) if h.symlog_obs == "auto" else bool(h.symlog_obs)
        return DreamerV3Module(
            observation_space,
            action_space,
            self.model_config,
            model_size=h.model_size,
            model_overrides=dict(h.model_overrides) if h.model_overrides else None,
            symlog_obs=symlog_obs,
            return_normalization_decay=h.return_normalization_decay,
        )

    def uses_reinforce(self) -> bool:
        gradient = self.hparams.actor_gradient
        if gradient == "auto":
            return self.module.discrete
        return gradient == "reinforce"

    # -- optimisation ------------------------------------------------------------------------
    def build_optimizers(self) -> Any:
        """Adam per part, with the reference implementation's epsilons. The multi-tensor
        (``foreach``) kernels rather than the fused ones: Lightning's mixed-precision plugins
        refuse to clip the gradients of optimizers that unscale internally (fused Adam)."""
        h, module = self.hparams, self.module
        return [
            torch.optim.Adam(module.world_model.parameters(), lr=h.world_model_lr, eps=1e-8, foreach=True),
            torch.optim.Adam(module.behavior.actor.parameters(), lr=h.actor_lr, eps=1e-5, foreach=True),
            torch.optim.Adam(module.behavior.critic.parameters(), lr=h.critic_lr, eps=1e-5, foreach=True),
        ]

    def window_losses(
        self, module: DreamerV3Module, window: TensorDict
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """World-model, actor and critic losses of one ``[B, T]`` window batch, with this config."""
        return module.compute_losses(window, self.loss_config())

    def loss_config(self) -> DreamerV3LossConfig:
        """The settings of :func:`~lightning_rl.algorithms.dreamerv3.loss.dreamer_losses` from the hparams."""
        h = self.hparams
        return DreamerV3LossConfig(
            free_bits=float(h.free_bits),
            dynamics_loss_scale=float(h.dynamics_loss_scale),
            representation_loss_scale=float(h.representation_loss_scale),
            horizon=int(h.horizon_H),
            gamma=float(h.gamma),
            lambda_=float(h.gae_lambda),
            entropy_scale=float(h.entropy_scale),
            reinforce=self.uses_reinforce(),
        )

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One DreamerV3 update: world model, actor and critic on one ``[B, T]`` window batch."""
        h = self.hparams
        ((policy_id, window),) = self.policy_batches(batch)
        module = self.policies[policy_id]
        world_model_loss, actor_loss, critic_loss, stats = self.window_losses(module, window)
        optimizers = self.optimizers()
        clips = (
            h.world_model_grad_clip_by_global_norm,
            h.actor_grad_clip_by_global_norm,
            h.critic_grad_clip_by_global_norm,
        )
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=False)
        self.manual_backward(world_model_loss + actor_loss + critic_loss)
        for optimizer, clip in zip(optimizers, clips, strict=True):
            if clip:
                self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
            optimizer.step()
        module.behavior.update_slow_critic(h.critic_ema_decay)
        self.num_grad_updates_lifetime += 1
        self.accumulate_learner_metrics(stats, policy_id)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_iteration_metric("num_grad_updates_lifetime", float(self.num_grad_updates_lifetime))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _replay_buffer_config(value: Any) -> dict[str, Any]:
    """``{"capacity": int}`` (default 1M steps, the paper's); RLlib's ``type`` key is accepted."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"replay_buffer_config must be a dict, got {value!r}.")
    allowed = ("type", "capacity")
    for key in value:
        if key not in allowed:
            raise ConfigError(unknown_name_message("DreamerV3 replay_buffer_config key", key, allowed))
    kind = value.get("type", "EpisodeReplayBuffer")
    if kind != "EpisodeReplayBuffer":
        raise ConfigError(
            f"DreamerV3 replays sequences from its own buffer; replay_buffer_config type must be "
            f"'EpisodeReplayBuffer' (or left out), got {kind!r}."
        )
    capacity = value.get("capacity", 1_000_000)
    if not _positive_int(capacity):
        raise ConfigError(f"replay_buffer_config capacity must be a positive integer, got {capacity!r}.")
    return {"type": kind, "capacity": capacity}
