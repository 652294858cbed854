"""RLlib's ``environment(clip_rewards=...)``: clip the rewards an algorithm learns from.

RLlib clips in its sample collector, when a sampled batch is built for training and before the
algorithm's post-processing (GAE, n-step returns ...); episode returns are measured on the env's
own rewards, so the reported ``episode_return_mean`` (training and evaluation) stays unclipped.
(RLlib 2.60's new API stack keeps the setting but reads it only on the old stack's path.) Here
the same point is :meth:`ExperienceSourceMethods.process_rollout`, where every sampled batch --
on-policy, replay, asynchronous, single- or multi-agent -- enters the learner before the
learner connectors and the algorithm's own processing. The runners, their episode metrics and
recorded episodes (``output=``) keep the env's rewards.

Settings: None or False: off (RLlib's None also clips Atari envs by sign on its old stack;
here nothing is switched on behind the user's back); True: ``sign(r)``; a positive number
``c``: ``clip(r, -c, c)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lightning_rl.errors import ConfigError

REWARD_KEY = ("next", "reward")


def check_clip_rewards(value: Any) -> None:
    """One :class:`ConfigError` unless ``value`` is None, a bool or a positive finite number."""
    if value is None or isinstance(value, bool):
        return
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(
            "clip_rewards must be None or False (off), True (sign of the reward) or a positive finite "
            f"number c (clip into [-c, c]), got {value!r}."
        )


def clip_rewards(rewards: torch.Tensor, setting: bool | float | None) -> torch.Tensor:
    """``rewards`` clipped as ``setting`` says (a new tensor; the input is left as it was)."""
    if setting is None or setting is False:
        return rewards
    if setting is True:
        return torch.sign(rewards)
    return rewards.clamp(-float(setting), float(setting))


def clip_batch_rewards(batch: Any, setting: bool | float | None) -> Any:
    """A sampled TensorDict with ``("next", "reward")`` clipped (the same batch when off)."""
    if setting is None or setting is False:
        return batch
    return batch.set(REWARD_KEY, clip_rewards(batch.get(REWARD_KEY), setting))
