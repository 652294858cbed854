"""PettingZoo's seats ``"player_0"``, ``"player_1"`` as OpenSpiel's player numbers ``0``, ``1``.

RLlib's self-play example plays OpenSpiel, whose agent ids are the player numbers, and its
``SelfPlayCallback`` reads ``episode.module_for(0)`` and compares ``agent_id`` with
``hash(episode.id_) % 2``. The PettingZoo twin renames the seats with this wrapper so that
RLlib's callback runs as written; nothing else about the game changes.
"""

from __future__ import annotations

from typing import Any

from lightning_rl.envs.multi_agent import MultiAgentEnv

ALL = "__all__"


class PlayerNumbers(MultiAgentEnv):
    """A turn-based lightning-rl MultiAgentEnv whose agents ``<name>_<k>`` become ``k``."""

    def __init__(self, env: MultiAgentEnv) -> None:
        self.env = env
        self._number = {agent: int(str(agent).rsplit("_", 1)[-1]) for agent in env.possible_agents}
        self._name = {number: agent for agent, number in self._number.items()}
        self.possible_agents = [self._number[a] for a in env.possible_agents]
        self.agents = [self._number[a] for a in env.agents]
        self.observation_spaces = {self._number[a]: s for a, s in env.observation_spaces.items()}
        self.action_spaces = {self._number[a]: s for a, s in env.action_spaces.items()}
        self.render_mode = getattr(env, "render_mode", None)

    def _numbered(self, per_agent: dict) -> dict:
        return {k if k == ALL else self._number[k]: v for k, v in per_agent.items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self.agents = [self._number[a] for a in self.env.agents]
        return self._numbered(obs), self._numbered(infos)

    def step(self, action_dict: dict) -> tuple[dict, dict, dict, dict, dict]:
        out = self.env.step({self._name[k]: v for k, v in action_dict.items()})
        self.agents = [self._number[a] for a in self.env.agents]
        return tuple(self._numbered(part) for part in out)  # type: ignore[return-value]

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()
