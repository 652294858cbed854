"""N independent CartPoles, one per agent (RLlib's ``MultiAgentCartPole``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from lightning_rl.envs.multi_agent import ALL, MultiAgentEnv


class MultiAgentCartPole(MultiAgentEnv):
    """Agent ``i`` (an int, as in RLlib) balances its own CartPole-v1.

    An agent whose pole falls (or reaches 500 steps) leaves the episode; the episode ends when
    every agent has left. Config: ``num_agents`` (default 2).
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        self.num_agents = int(config.get("num_agents", 2))
        self.envs = [gym.make("CartPole-v1", disable_env_checker=True) for _ in range(self.num_agents)]
        self.possible_agents = list(range(self.num_agents))
        self.agents = []
        self.observation_spaces = {i: env.observation_space for i, env in enumerate(self.envs)}
        self.action_spaces = {i: env.action_space for i, env in enumerate(self.envs)}
        self._done: set[int] = set()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._done = set()
        self.agents = list(self.possible_agents)
        obs, infos = {}, {}
        for i, env in enumerate(self.envs):
            obs[i], infos[i] = env.reset(seed=None if seed is None else seed + i)
        return obs, infos

    def step(self, action_dict):
        self.check_actions(action_dict, self.agents)
        obs, rewards, terminateds, truncateds, infos = {}, {}, {}, {}, {}
        for i, action in action_dict.items():
            obs[i], rewards[i], terminateds[i], truncateds[i], infos[i] = self.envs[i].step(action)
            if terminateds[i] or truncateds[i]:
                self._done.add(i)
        self.agents = [i for i in self.possible_agents if i not in self._done]
        terminateds[ALL] = not self.agents and all(terminateds.get(i, True) for i in action_dict)
        truncateds[ALL] = not self.agents and not terminateds[ALL]
        return obs, rewards, terminateds, truncateds, infos

    def close(self) -> None:
        for env in self.envs:
            env.close()
