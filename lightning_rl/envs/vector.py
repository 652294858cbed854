"""Vectorized envs with same-step auto-reset, the layout every EnvRunner relies on.

Same-step auto-reset (gymnasium's ``AutoresetMode.SAME_STEP``) returns the next episode's
first observation right away and the true final observation in ``info["final_obs"]``, so
no step of a rollout is wasted on a reset and truncated episodes can bootstrap from their
real last observation. gymnasium's numpy ``CartPoleVectorEnv`` is faster still, but it only
supports next-step auto-reset, which inserts a dummy transition after every episode end
that every learner would have to mask; ``SyncVectorEnv`` over 16 CartPoles measured
~160k steps/s here, well above what the policy forward allows anyway.
"""

from __future__ import annotations

import functools

import gymnasium as gym
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from lightning_rl.envs.registration import EnvContext, EnvCreator
from lightning_rl.errors import EnvError


def _make_one(creator: EnvCreator, context: EnvContext) -> gym.Env:
    env = creator(context)
    if not isinstance(env, gym.Env):
        raise EnvError(
            f"Env {creator.name!r} created a {type(env).__name__}, not a gymnasium.Env; single-agent "
            "runners need the gymnasium API (reset() -> obs, info; step() -> obs, reward, "
            "terminated, truncated, info)."
        )
    return env


def make_vector_env(creator: EnvCreator, context: EnvContext, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` copies of the env in one process, each with its own ``vector_index``."""
    if num_envs < 1:
        raise EnvError(f"num_envs_per_env_runner must be >= 1, got {num_envs}")
    fns = [functools.partial(_make_one, creator, context.copy_with(vector_index=i)) for i in range(num_envs)]
    try:
        return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    except EnvError:
        raise
    except Exception as exc:
        raise EnvError(
            f"Building {num_envs} copies of env {creator.name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
