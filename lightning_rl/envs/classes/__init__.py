"""Example envs shipped with the package (registered as entry points in pyproject.toml)."""

from lightning_rl.envs.classes.corridor import CorridorEnv

__all__ = ["CorridorEnv"]
