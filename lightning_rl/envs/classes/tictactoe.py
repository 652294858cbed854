"""TicTacToe for two agents taking turns, with action masks (a turn-based example env)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from lightning_rl.envs.multi_agent import ALL, MultiAgentEnv

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]


class TicTacToe(MultiAgentEnv):
    """Players ``"player_0"`` (moves first) and ``"player_1"`` alternate on a 3x3 board.

    Only the player to move observes: ``{"observation": 18 floats (own marks, opponent
    marks), "action_mask": 9 ints (1 = empty cell)}``. The winner gets +1, the loser -1
    (both at the final step, the loser with its final observation), a draw 0. An illegal
    move raises: with masking, one can never reach the env, and tests rely on that.
    Config: ``first_player`` ("player_0", "player_1" or "random").
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        self.first_player = config.get("first_player", "player_0")
        self.possible_agents = ["player_0", "player_1"]
        observation = spaces.Dict(
            {
                "observation": spaces.Box(0.0, 1.0, (18,), np.float32),
                "action_mask": spaces.Box(0, 1, (9,), np.int8),
            }
        )
        self.observation_spaces = {agent: observation for agent in self.possible_agents}
        self.action_spaces = {agent: spaces.Discrete(9) for agent in self.possible_agents}
        self.board = np.zeros(9, dtype=np.int8)  # 0 empty, 1 player_0, 2 player_1
        self.to_move = "player_0"
        self.agents = []
        self._rng = np.random.default_rng()

    def _obs(self, agent: str) -> dict[str, np.ndarray]:
        me = 1 if agent == "player_0" else 2
        own = (self.board == me).astype(np.float32)
        other = ((self.board != me) & (self.board != 0)).astype(np.float32)
        return {"observation": np.concatenate([own, other]), "action_mask": (self.board == 0).astype(np.int8)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.board[:] = 0
        first = self.first_player
        if first == "random":
            first = self.possible_agents[int(self._rng.integers(2))]
        self.to_move = first
        self.agents = list(self.possible_agents)
        return {self.to_move: self._obs(self.to_move)}, {}

    def step(self, action_dict):
        self.check_actions(action_dict, [self.to_move])
        agent = self.to_move
        action = int(action_dict[agent])
        if not 0 <= action < 9 or self.board[action] != 0:
            raise ValueError(f"Illegal move {action} by {agent} on board {self.board.tolist()}")
        self.board[action] = 1 if agent == "player_0" else 2
        other = "player_1" if agent == "player_0" else "player_0"
        mark = self.board[action]
        won = any(all(self.board[i] == mark for i in line) for line in LINES)
        if won or not (self.board == 0).any():
            rewards = {agent: 1.0, other: -1.0} if won else {agent: 0.0, other: 0.0}
            obs = {agent: self._obs(agent), other: self._obs(other)}
            self.agents = []
            return obs, rewards, {agent: True, other: True, ALL: True}, {ALL: False}, {}
        self.to_move = other
        return {other: self._obs(other)}, {agent: 0.0}, {ALL: False}, {ALL: False}, {}
