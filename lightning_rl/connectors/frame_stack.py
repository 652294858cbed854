"""``FrameStack``: the last ``num_frames`` observations of each env copy, stacked (Atari's 4 frames).

An env-to-module connector keeps one stack per env copy (one per row of the batch in
:class:`~lightning_rl.Policy` inference) through the hooks the runners and ``Policy`` call:
``reset(num_envs)`` once, ``episode_start(env_ids)`` when rows start an episode (their stack
is then filled with the episode's first frame, as gymnasium's ``FrameStackObservation`` does
with ``padding_type="reset"``), and ``__call__`` after every env step, which pushes the new
frame. A call with ``env_ids`` is an episode's final observation: its stack is returned but the
rows' state is left alone (the episode restarts right after).

Stacking here rather than in an env wrapper means a trained policy stacks frames by itself in
inference (``Policy.compute_single_action(frame)``), and the env and its recordings keep
single frames. The stacks are stored in the sampled batch as the network saw them, uint8
kept: V-trace's and PPO's importance ratios need exactly the input the runner's policy had.

Frames of shape ``(H, W)`` stack to ``(k, H, W)``, channel-first images ``(C, H, W)`` to
``(k * C, H, W)`` and vectors ``(D,)`` to ``(k * D,)``; the stack keeps the frame dtype. Used by
single-agent runners (the multi-agent runner does not keep connector rows per agent).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lightning_rl.connectors.base import EnvToModule
from lightning_rl.errors import ConfigError, SpaceError

__all__ = ["FrameStack"]


class FrameStack(EnvToModule):
    """Stack the last ``num_frames`` observations of every env copy along the first axis.

    Args:
        num_frames: how many consecutive observations the network sees (4 for Atari).
        multi_agent: RLlib's constructor argument, accepted so ported configs run; every
            policy has its own env-to-module pipeline here, so stacks are per policy either way.
    """

    def __init__(self, num_frames: int = 4, *, multi_agent: bool = False) -> None:
        self.multi_agent = bool(multi_agent)
        # No effect here, so not part of the plain-data spec: specs, checkpoints and exported
        # metadata stay as they were.
        self._config.pop("multi_agent", None)
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ConfigError(f"FrameStack num_frames must be a positive integer, got {num_frames!r}.")
        self.num_frames = num_frames
        self._frame_shape: tuple[int, ...] = ()
        self._stacks: torch.Tensor | None = None  # [num_envs, k, *frame_shape]
        self._fresh: torch.Tensor | None = None  # rows whose next frame starts an episode

    def setup(self, observation_space: gym.Space) -> gym.Space:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) not in (1, 2, 3):
            raise SpaceError(
                f"FrameStack needs a Box observation space of a vector (D,), a frame (H, W) or a "
                f"channel-first image (C, H, W), got {observation_space}."
            )
        shape = tuple(observation_space.shape)
        if len(shape) == 3 and shape[-1] <= 4 < shape[0]:
            raise SpaceError(
                f"FrameStack stacks channel-first images (C, H, W); {shape} looks channel-last. Make it "
                "grayscale or channel-first first (e.g. lightning_rl.envs.atari.make_atari does)."
            )
        self._frame_shape = shape
        k = self.num_frames

        def stacked(bound: np.ndarray) -> np.ndarray:
            bound = np.broadcast_to(bound, shape)
            out = np.stack([bound] * k)
            return out.reshape(self._output_shape())

        return spaces.Box(
            stacked(observation_space.low),
            stacked(observation_space.high),
            self._output_shape(),
            observation_space.dtype,
        )

    def _output_shape(self) -> tuple[int, ...]:
        shape, k = self._frame_shape, self.num_frames
        if len(shape) == 2:
            return (k, *shape)
        return (k * shape[0], *shape[1:])

    # -- per-episode state -------------------------------------------------------------------
    def reset(self, num_envs: int) -> None:
        self._stacks = None
        self._fresh = torch.ones(num_envs, dtype=torch.bool)

    def episode_start(self, env_ids: torch.Tensor) -> None:
        if self._fresh is not None:
            self._fresh[env_ids] = True

    def __call__(self, obs: torch.Tensor, *, env_ids: torch.Tensor | None = None, update: bool = True) -> Any:
        # ``update`` concerns filter statistics; a frame stack must follow the episode whatever it is.
        if env_ids is not None:
            return self._final_stacks(obs, env_ids)
        rows = obs.shape[0]
        if self._stacks is None or self._stacks.shape[0] != rows or self._stacks.dtype != obs.dtype:
            if self._fresh is None or self._fresh.shape[0] != rows:
                self._fresh = torch.ones(rows, dtype=torch.bool)
            self._stacks = obs.unsqueeze(1).expand(rows, self.num_frames, *obs.shape[1:]).clone()
        else:
            # A new tensor every step (never written in place afterwards), so callers may keep it.
            self._stacks = torch.cat([self._stacks[:, 1:], obs.unsqueeze(1)], dim=1)
        fresh = self._fresh
        if bool(fresh.any()):
            self._stacks[fresh] = obs[fresh].unsqueeze(1).expand(-1, self.num_frames, *obs.shape[1:])
            fresh.zero_()
        return self._stacks.reshape(rows, *self._output_shape())

    def _final_stacks(self, obs: torch.Tensor, env_ids: torch.Tensor) -> torch.Tensor:
        if self._stacks is None:
            stacks = obs.unsqueeze(1).expand(-1, self.num_frames, *obs.shape[1:])
        else:
            stacks = torch.cat([self._stacks[env_ids, 1:], obs.unsqueeze(1)], dim=1)
        return stacks.reshape(obs.shape[0], *self._output_shape())
