"""Adapters from other env APIs to lightning-rl's."""

from lightning_rl.envs.wrappers.open_spiel import OpenSpielEnv
from lightning_rl.envs.wrappers.pettingzoo_env import ParallelPettingZooEnv, PettingZooEnv

__all__ = ["OpenSpielEnv", "ParallelPettingZooEnv", "PettingZooEnv"]
