"""DreamerV3's three losses on one ``[B, T]`` window batch (Hafner et al. 2023).

The objectives are written out where their networks live, and this module runs them in order:

1. **World model** (eq. 5, :meth:`WorldModel.loss <.world_model.WorldModel.loss>`)::

       L_wm = decoder + reward + continue    (MSE to the (symlog) target, two-hot CE, BCE)
              + dyn_scale * max(free_bits, KL(sg(post) || prior))
              + rep_scale * max(free_bits, KL(post || sg(prior)))

2. **Actor and critic** in imagination from every posterior state (eq. 7-11,
   :meth:`Behavior.loss <.behavior.Behavior.loss>`), with lambda-returns ``R`` over
   ``horizon_H`` dreamed steps and ``S`` the EMA of their 5th-95th percentile range::

       L_actor  = -mean(w * (objective + entropy_scale * H(pi)))
                  objective = log pi(a) * sg((R - v) / max(1, S))   (REINFORCE, discrete)
                            | (R - v) / max(1, S)                   (dynamics backprop, continuous)
       L_critic = mean(w * (CE(critic, sg(R)) + CE(critic, slow_critic)))   (two-hot over bins)

   where ``w`` is the dream's cumulative discounted continue probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict

from lightning_rl.algorithms.dreamerv3.behavior import Behavior
from lightning_rl.algorithms.dreamerv3.world_model import WorldModel


@dataclass(frozen=True)
class DreamerV3LossKeys:
    """Where DreamerV3's losses find their inputs in a window batch (``SequenceReplayDataModule``)."""

    observation: str = "observation"
    prev_action: str = "prev_action"
    reward: str = "reward"
    is_first: str = "is_first"
    is_terminated: str = "is_terminated"


DREAMER_KEYS = DreamerV3LossKeys()


@dataclass(frozen=True)
class DreamerV3LossConfig:
    """DreamerV3's loss settings (the algorithm's hyperparameters of the same meaning)."""

    free_bits: float
    dynamics_loss_scale: float
    representation_loss_scale: float
    horizon: int
    gamma: float
    lambda_: float
    entropy_scale: float
    reinforce: bool


def dreamer_losses(
    world_model: WorldModel,
    behavior: Behavior,
    window: TensorDict,
    model_actions: torch.Tensor,
    config: DreamerV3LossConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(world-model loss, actor loss, critic loss, stats)`` of one window batch.

    ``model_actions`` are the window's previous actions as the model reads them (one-hot for
    discrete actions).
    """
    keys = DREAMER_KEYS
    cont = (~window[keys.is_terminated]).float()
    world_model_loss, stats, h, z = world_model.loss(
        window[keys.observation],
        model_actions,
        window[keys.reward],
        window[keys.is_first],
        cont,
        free_bits=config.free_bits,
        dyn_scale=config.dynamics_loss_scale,
        rep_scale=config.representation_loss_scale,
    )
    actor_loss, critic_loss, behavior_stats, _ = behavior.loss(
        world_model,
        h.reshape(-1, h.shape[-1]),
        z.reshape(-1, z.shape[-1]),
        cont.reshape(-1),
        horizon=config.horizon,
        gamma=config.gamma,
        lambda_=config.lambda_,
        entropy_scale=config.entropy_scale,
        reinforce=config.reinforce,
    )
    stats.update(behavior_stats)
    return world_model_loss, actor_loss, critic_loss, stats
