"""The multi-agent env API (RLlib's ``MultiAgentEnv``) and a conversion to PettingZoo.

Every call speaks in dicts keyed by agent id:

* ``reset() -> (obs, infos)`` and ``step(actions) -> (obs, rewards, terminateds, truncateds,
  infos)``;
* ``obs`` holds exactly the agents that must act next (a turn-based game returns one);
* ``rewards`` may name agents that are not acting now (the player who just moved);
* ``terminateds``/``truncateds`` carry the key ``"__all__"``, True when the episode is over;
  an agent done earlier (it left) appears with True under its own id and, if it wants to be
  bootstrapped correctly, with its final observation in ``obs``;
* agents can join mid-episode by simply appearing in ``obs``.

Spaces are per agent: ``observation_spaces``/``action_spaces`` dicts over ``possible_agents``.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable
from typing import Any

import gymnasium as gym
from pettingzoo import ParallelEnv

from lightning_rl.errors import SpaceError

AgentID = Hashable
MultiAgentDict = dict[AgentID, Any]
ALL = "__all__"


class MultiAgentEnv(abc.ABC):
    """Base class of multi-agent envs; subclasses set the spaces and implement reset/step."""

    metadata: dict[str, Any] = {"render_modes": []}
    render_mode: str | None = None
    possible_agents: list[AgentID] = []
    agents: list[AgentID] = []
    observation_spaces: dict[AgentID, gym.Space] = {}
    action_spaces: dict[AgentID, gym.Space] = {}

    @abc.abstractmethod
    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[MultiAgentDict, MultiAgentDict]: ...

    @abc.abstractmethod
    def step(
        self, action_dict: MultiAgentDict
    ) -> tuple[MultiAgentDict, MultiAgentDict, MultiAgentDict, MultiAgentDict, MultiAgentDict]: ...

    def get_observation_space(self, agent_id: AgentID) -> gym.Space:
        try:
            return self.observation_spaces[agent_id]
        except KeyError:
            raise SpaceError(
                f"Agent {agent_id!r} has no observation space; the env declares spaces for "
                f"{list(self.observation_spaces)}."
            ) from None

    def get_action_space(self, agent_id: AgentID) -> gym.Space:
        try:
            return self.action_spaces[agent_id]
        except KeyError:
            raise SpaceError(
                f"Agent {agent_id!r} has no action space; the env declares spaces for "
                f"{list(self.action_spaces)}."
            ) from None

    def check_actions(self, action_dict: MultiAgentDict, expected: list[AgentID]) -> None:
        """One clear error when the actions do not match the agents that had to act."""
        missing = [agent for agent in expected if agent not in action_dict]
        extra = [agent for agent in action_dict if agent not in expected]
        if missing or extra:
            raise ValueError(
                f"The action dict must hold exactly the agents that received an observation {expected}; "
                f"missing {missing}, unexpected {extra}."
            )

    def render(self) -> Any:
        return None

    def close(self) -> None:  # noqa: B027  (optional: most envs hold nothing to release)
        """Release the env's resources."""

    @property
    def unwrapped(self) -> MultiAgentEnv:
        return self

    def __str__(self) -> str:
        return f"<{type(self).__name__}>"


def is_multi_agent(env: Any) -> bool:
    return isinstance(env, MultiAgentEnv)


class MultiAgentEnvToPettingZoo(ParallelEnv):
    """View a :class:`MultiAgentEnv` as a PettingZoo ``ParallelEnv``.

    Only meaningful for envs where every live agent acts every step (PettingZoo's parallel
    API has no turn-taking); ``pettingzoo.test.parallel_api_test`` passes on such envs.
    """

    def __init__(self, env: MultiAgentEnv) -> None:
        self.env = env
        self.metadata = {"render_modes": [], "name": type(env).__name__, "is_parallelizable": True}
        self.possible_agents = list(env.possible_agents)
        self.agents: list[AgentID] = []
        self.render_mode = None

    def observation_space(self, agent: AgentID) -> gym.Space:
        return self.env.get_observation_space(agent)

    def action_space(self, agent: AgentID) -> gym.Space:
        return self.env.get_action_space(agent)

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self.agents = list(obs)
        return obs, {agent: infos.get(agent, {}) for agent in self.agents}

    def step(self, actions):
        obs, rewards, terminateds, truncateds, infos = self.env.step(actions)
        done_all = terminateds.get(ALL, False) or truncateds.get(ALL, False)
        agents = self.agents
        out_obs = {a: obs[a] for a in agents if a in obs}
        out_rewards = {a: float(rewards.get(a, 0.0)) for a in agents}
        out_term = {a: bool(terminateds.get(a, terminateds.get(ALL, False))) for a in agents}
        out_trunc = {a: bool(truncateds.get(a, truncateds.get(ALL, False))) for a in agents}
        out_infos = {a: infos.get(a, {}) for a in agents}
        self.agents = [] if done_all else [a for a in agents if not (out_term[a] or out_trunc[a])]
        return out_obs, out_rewards, out_term, out_trunc, out_infos

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def to_pettingzoo(env: MultiAgentEnv):
    """A PettingZoo ``ParallelEnv`` over ``env`` (for PettingZoo tooling and API tests)."""
    return MultiAgentEnvToPettingZoo(env)
