"""Env resolution (gymnasium ids, registered names, plugins, Ray Tune names) and env helpers."""

from lightning_rl.envs.atari import make_atari, wrap_atari
from lightning_rl.envs.registration import EnvContext, EnvCreator, make_env, register_env, resolve_env

__all__ = ["EnvContext", "EnvCreator", "make_atari", "make_env", "register_env", "resolve_env", "wrap_atari"]
