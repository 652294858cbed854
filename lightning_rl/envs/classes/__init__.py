"""Example envs shipped with the package (registered as entry points in pyproject.toml)."""

from lightning_rl.envs.classes.combination_lock import CombinationLock
from lightning_rl.envs.classes.corridor import CorridorEnv
from lightning_rl.envs.classes.crashing import CrashingEnv
from lightning_rl.envs.classes.multi_agent_cartpole import MultiAgentCartPole
from lightning_rl.envs.classes.repeat_after_me import RepeatAfterMe
from lightning_rl.envs.classes.tictactoe import TicTacToe

__all__ = [
    "CombinationLock",
    "CorridorEnv",
    "CrashingEnv",
    "MultiAgentCartPole",
    "RepeatAfterMe",
    "TicTacToe",
]
