"""Atari games from ``ale_py`` by id, with the standard (DQN/IMPALA) preprocessing.

``make_atari({"id": "ale_py:ALE/Pong-v5"})`` (registered as the env ``"Atari"``) builds::

    gym.make(id, frameskip=1)            the raw emulator: every frame, sticky actions as the id sets
    -> AtariPreprocessing                  no-op starts, frame skip 4 with a max-pool over the last two
                                           frames (flicker), grayscale, resize to 84x84 (or 64x64),
                                           optionally a terminal on life loss; uint8 kept
    -> a channel axis (1, H, W)            so the CNN and FrameStack see channel-first images

Frame stacking is left to the :class:`~lightning_rl.connectors.FrameStack` env-to-module
connector (``env_to_module_connector=FrameStack(4)``), so a trained policy stacks frames by
itself at inference time; ``frame_stack=k`` stacks in the env instead (gymnasium's
``FrameStackObservation``). Observations stay uint8 all the way to the network, whose
:class:`~lightning_rl.modules.CNNEncoder` (Nature-CNN unless ``model_config["conv_filters"]``)
scales them to [0, 1]. ROMs ship with ``ale-py`` >= 0.9; resizing needs OpenCV
(``pip install lightning-rl[atari]``).

In a config::

    env: Atari
    env_config: {id: ale_py:ALE/Pong-v5, screen_size: 84}
    env_to_module_connector: [{name: FrameStack, config: {num_frames: 4}}]
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from lightning_rl.errors import ConfigError, EnvError

# Keys of env_config that configure the preprocessing; everything else goes to gym.make.
PREPROCESSING_KEYS = (
    "frame_skip",
    "screen_size",
    "grayscale",
    "noop_max",
    "terminal_on_life_loss",
    "frame_stack",
)


def make_atari(env_config: dict[str, Any] | None = None) -> gym.Env:
    """An ALE game with the standard preprocessing; ``env_config`` as in :func:`wrap_atari` plus
    ``id`` (default ``"ale_py:ALE/Pong-v5"``) and any ``gym.make`` keyword (e.g.
    ``repeat_action_probability``, ``full_action_space``)."""
    config = dict(env_config or {})
    env_id = config.pop("id", "ale_py:ALE/Pong-v5")
    preprocessing = {key: config.pop(key) for key in PREPROCESSING_KEYS if key in config}
    if "frameskip" in config and config["frameskip"] != 1:
        raise ConfigError(
            f"make_atari skips frames in its preprocessing (frame_skip={preprocessing.get('frame_skip', 4)});"
            f" the emulator's own frameskip must stay 1, got {config['frameskip']!r}."
        )
    config["frameskip"] = 1
    try:
        env = gym.make(env_id, **config)
    except gym.error.Error as exc:
        raise EnvError(f"Cannot make Atari env {env_id!r}: {exc}") from exc
    return wrap_atari(env, **preprocessing)


def wrap_atari(
    env: gym.Env,
    *,
    frame_skip: int = 4,
    screen_size: int = 84,
    grayscale: bool = True,
    noop_max: int = 30,
    terminal_on_life_loss: bool = False,
    frame_stack: int | None = None,
) -> gym.Env:
    """The standard Atari preprocessing around an ALE env created with ``frameskip=1``.

    Output: uint8 ``(1, S, S)`` (grayscale) or ``(3, S, S)`` (RGB) images, channel first, or
    ``(frame_stack * C, S, S)`` with ``frame_stack``.
    """
    if screen_size not in (64, 84) and (not isinstance(screen_size, int) or screen_size < 8):
        raise ConfigError(
            f"screen_size must be an integer >= 8 (84 or 64 are standard), got {screen_size!r}."
        )
    if not isinstance(frame_skip, int) or frame_skip < 1:
        raise ConfigError(f"frame_skip must be a positive integer, got {frame_skip!r}.")
    try:
        env = gym.wrappers.AtariPreprocessing(
            env,
            noop_max=noop_max,
            frame_skip=frame_skip,
            screen_size=screen_size,
            terminal_on_life_loss=terminal_on_life_loss,
            grayscale_obs=grayscale,
            grayscale_newaxis=False,
            scale_obs=False,
        )
    except gym.error.DependencyNotInstalled as exc:
        raise EnvError(
            f"Atari preprocessing needs OpenCV to resize frames: pip install 'lightning-rl[atari]' ({exc})."
        ) from exc
    env = _ChannelFirst(env)
    if frame_stack:
        env = gym.wrappers.FrameStackObservation(env, int(frame_stack), padding_type="reset")
        shape = env.observation_space.shape
        env = gym.wrappers.ReshapeObservation(env, (shape[0] * shape[1], *shape[2:]))
    return env


class _ChannelFirst(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """``(H, W)`` -> ``(1, H, W)``; ``(H, W, C)`` -> ``(C, H, W)`` (what the CNN encoder and
    FrameStack expect), no copy for grayscale frames.

    It records its (empty) constructor arguments like gymnasium's own wrappers, so the env's
    ``spec`` can rebuild it and gymnasium's ``check_env`` accepts the whole stack.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        self._grayscale = len(space.shape) == 2
        if self._grayscale:
            low, high = space.low[None], space.high[None]
        else:
            low, high = np.moveaxis(space.low, -1, 0), np.moveaxis(space.high, -1, 0)
        self.observation_space = gym.spaces.Box(low, high, low.shape, space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        if self._grayscale:
            return observation[None]
        return np.ascontiguousarray(np.moveaxis(observation, -1, 0))
