"""PettingZoo AEC and Parallel envs as lightning-rl MultiAgentEnvs (RLlib's adapters' API).

``register_env("env", lambda _: PettingZooEnv(waterworld_v4.env()))`` works as in RLlib.
Action masks of PettingZoo's classic games stay in the observation dict
(``{"observation", "action_mask"}``), where lightning-rl's policies read them, so illegal
actions are never sampled.
"""

from __future__ import annotations

from typing import Any

from lightning_rl.envs.multi_agent import ALL, MultiAgentEnv


class PettingZooEnv(MultiAgentEnv):
    """An AEC (turn-by-turn) PettingZoo env: only the agent whose turn it is observes.

    Rewards come from ``env.last()``: each agent's reward accumulated since it last acted, as
    AEC defines it; agents that are done are stepped with ``None`` as AEC requires, so their
    final observation and reward reach the learner.
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        env.reset()
        self.possible_agents = list(env.possible_agents)
        self.agents = list(env.agents)
        self.observation_spaces = {agent: env.observation_space(agent) for agent in self.possible_agents}
        self.action_spaces = {agent: env.action_space(agent) for agent in self.possible_agents}
        self.render_mode = getattr(env, "render_mode", None)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.env.reset(seed=seed, options=options)
        self.agents = list(self.env.agents)
        agent = self.env.agent_selection
        return {agent: self.env.observe(agent)}, {agent: self.env.infos.get(agent, {})}

    def step(self, action_dict):
        agent = self.env.agent_selection
        self.check_actions(action_dict, [agent])
        self.env.step(action_dict[agent])
        obs, rewards, terminateds, truncateds, infos = {}, {}, {}, {}, {}
        while self.env.agents:
            observation, reward, terminated, truncated, info = self.env.last()
            current = self.env.agent_selection
            obs[current], rewards[current] = observation, reward
            terminateds[current], truncateds[current], infos[current] = terminated, truncated, info
            if terminated or truncated:
                self.env.step(None)
            else:
                break
        self.agents = list(self.env.agents)
        done = not self.env.agents
        terminateds[ALL] = done and all(terminateds.get(a, True) for a in obs)
        truncateds[ALL] = done and not terminateds[ALL]
        return obs, rewards, terminateds, truncateds, infos

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class ParallelPettingZooEnv(MultiAgentEnv):
    """A Parallel PettingZoo env: every live agent observes and acts each step."""

    def __init__(self, env: Any) -> None:
        self.par_env = env
        env.reset()
        self.possible_agents = list(env.possible_agents)
        self.agents = list(env.agents)
        self.observation_spaces = {agent: env.observation_space(agent) for agent in self.possible_agents}
        self.action_spaces = {agent: env.action_space(agent) for agent in self.possible_agents}
        self.render_mode = getattr(env, "render_mode", None)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, infos = self.par_env.reset(seed=seed, options=options)
        self.agents = list(self.par_env.agents)
        return obs, infos

    def step(self, action_dict):
        self.check_actions(action_dict, self.agents)
        obs, rewards, terminateds, truncateds, infos = self.par_env.step(action_dict)
        self.agents = list(self.par_env.agents)
        done = not self.agents
        terminateds = dict(terminateds)
        truncateds = dict(truncateds)
        terminateds[ALL] = done and all(terminateds.values())
        truncateds[ALL] = done and not terminateds[ALL]
        return obs, rewards, terminateds, truncateds, infos

    def render(self) -> Any:
        return self.par_env.render()

    def close(self) -> None:
        self.par_env.close()
