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
import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv

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


def _placeholder(space: gym.Space) -> Any:
    """A fixed, valid observation of ``space`` for an agent that has not observed yet (AEC's
    ``observe`` answers for every live agent; a turn-based env shows only the one to move)."""
    if isinstance(space, spaces.Box):
        return np.clip(np.zeros(space.shape), space.low, space.high).astype(space.dtype)
    if isinstance(space, spaces.Discrete):
        return np.int64(space.start)
    if isinstance(space, spaces.MultiDiscrete):
        return np.asarray(space.start, dtype=space.dtype).copy()
    if isinstance(space, spaces.MultiBinary):
        return np.zeros(space.shape, dtype=space.dtype)
    if isinstance(space, spaces.Dict):
        return {key: _placeholder(sub) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(_placeholder(sub) for sub in space.spaces)
    raise SpaceError(f"No placeholder observation for space {space}.")


class MultiAgentEnvToPettingZooAEC(AECEnv):
    """View any :class:`MultiAgentEnv` as a PettingZoo ``AECEnv`` (agent by agent).

    The agents that received an observation act one after another (``agent_selection``);
    once all of them have acted, the wrapped env steps with their joint action. So turn-based
    games (one agent observes at a time) and simultaneous-move envs both map onto AEC, and
    PettingZoo's ``api_test``/``seed_test`` can check them. Done agents are stepped with
    ``None`` as AEC requires.
    """

    def __init__(self, env: MultiAgentEnv) -> None:
        super().__init__()
        self.env = env
        self.metadata = {"render_modes": [], "name": type(env).__name__, "is_parallelizable": False}
        self.possible_agents = list(env.possible_agents)
        self.agents: list[AgentID] = []
        self.render_mode = None
        self._observations: dict[AgentID, Any] = {}
        self._queue: list[AgentID] = []
        self._actions: dict[AgentID, Any] = {}

    def observation_space(self, agent: AgentID) -> gym.Space:
        return self.env.get_observation_space(agent)

    def action_space(self, agent: AgentID) -> gym.Space:
        return self.env.get_action_space(agent)

    def observe(self, agent: AgentID) -> Any:
        if agent not in self._observations:
            self._observations[agent] = _placeholder(self.observation_space(agent))
        return self._observations[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        obs, infos = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self._observations = dict(obs)
        self.rewards = {agent: 0.0 for agent in self.agents}
        self._cumulative_rewards = {agent: 0.0 for agent in self.agents}
        self.terminations = {agent: False for agent in self.agents}
        self.truncations = {agent: False for agent in self.agents}
        self.infos = {agent: dict(infos.get(agent, {})) for agent in self.agents}
        self._queue = [agent for agent in obs if agent in self.agents]
        self._actions = {}
        self.agent_selection = self._queue[0]

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._actions[agent] = action
        self._cumulative_rewards[agent] = 0.0
        self._queue.remove(agent)
        if self._queue:  # others still choose their part of the joint action
            self.agent_selection = self._queue[0]
            self._clear_rewards()
            return
        obs, rewards, terminateds, truncateds, infos = self.env.step(self._actions)
        self._actions = {}
        self._observations.update(obs)
        terminated_all, truncated_all = bool(terminateds.get(ALL, False)), bool(truncateds.get(ALL, False))
        for name in self.agents:
            self.rewards[name] = float(rewards.get(name, 0.0))
            self.terminations[name] = bool(terminateds.get(name, False)) or terminated_all
            self.truncations[name] = (
                bool(truncateds.get(name, False)) or truncated_all
            ) and not self.terminations[name]
            self.infos[name] = dict(infos.get(name, {}))
        self._accumulate_rewards()
        done = [name for name in self.agents if self.terminations[name] or self.truncations[name]]
        self._queue = [name for name in obs if name in self.agents and name not in done]
        self.agent_selection = self._queue[0] if self._queue else (done[0] if done else self.agents[0])
        if done:
            self._deads_step_first()

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def to_pettingzoo_aec(env: MultiAgentEnv) -> MultiAgentEnvToPettingZooAEC:
    """A PettingZoo ``AECEnv`` over ``env``: turn-based and simultaneous envs alike."""
    return MultiAgentEnvToPettingZooAEC(env)
