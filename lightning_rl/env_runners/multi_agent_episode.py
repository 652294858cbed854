"""One env copy's running multi-agent episode, as RLlib's ``MultiAgentEpisode`` shows it.

Mapping functions see it (``episode.id_``: RLlib's self-play seat choice
``hash(episode.id_) % 2`` works) and RLlib callbacks' episode hooks get it (``get_return()``,
``agent_episodes``/``agent_episode_ids``, ``module_for(agent_id)``, ``get_rewards()``,
``custom_data``). The per-agent step record is kept only for runners with episode hooks
(``record=True``), so a runner without callbacks pays for a dict of returns and nothing more.

Per agent, as in RLlib, one step is one action: the observation the agent acted on opens it,
its next observation closes it, and every reward the agent receives in between (in a
turn-based game, the rewards handed out on the other players' turns, such as the loser's -1
at a connect-four win) belongs to that step.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from lightning_rl.env_runners.rllib_callbacks import EpisodeStatus, RunnerEpisode


class MultiAgentRunnerEpisode(EpisodeStatus):
    """RLlib's ``MultiAgentEpisode`` surface over one env copy's episode (see the module doc)."""

    def __init__(self, id_: int = 0, env_index: int = 0, record: bool = False) -> None:
        self.id_ = id_
        self.env_index = env_index
        self.mapping: dict[Hashable, str] = {}  # agent -> policy (module), fixed for the episode
        self.agent_returns: dict[Hashable, float] = {}
        self.length = 0  # env steps
        self.custom_data: dict[str, Any] = {}
        self.agent_episodes: dict[Hashable, RunnerEpisode] = {}
        self.is_terminated = False
        self.is_truncated = False
        self._record = record
        self._pending: dict[Hashable, Any] = {}  # agent -> action taken, step not yet closed
        self._hanging: dict[Hashable, float] = {}  # rewards of agents with no step open

    # -- what the runner tells it (only with record=True) -----------------------------------------
    def observe(self, agent_id: Hashable, observation: Any) -> None:
        """The agent's observation: closes its open step, or starts its own episode."""
        if not self._record:
            return
        episode = self.agent_episodes.get(agent_id)
        if episode is None:
            self.agent_episodes[agent_id] = RunnerEpisode(
                f"{self.id_}/{agent_id}", self.env_index, observation
            )
        elif agent_id in self._pending:
            self._close(agent_id, observation, False, False)

    def act(self, agent_id: Hashable, action: Any) -> None:
        if self._record:
            self._pending[agent_id] = action

    def reward(self, agent_id: Hashable, reward: float) -> None:
        if self._record:
            self._hanging[agent_id] = self._hanging.get(agent_id, 0.0) + float(reward)

    def finish_agent(self, agent_id: Hashable, observation: Any, terminated: bool, truncated: bool) -> None:
        """The agent is done (it left, or the episode ended): its open step ends with it."""
        if not self._record:
            return
        episode = self.agent_episodes.get(agent_id)
        if episode is None:
            return
        if agent_id in self._pending:
            self._close(
                agent_id,
                episode.observations[-1] if observation is None else observation,
                terminated,
                truncated,
            )
        else:  # a reward after its last step (the loser of a turn-based game) joins that step
            extra = self._hanging.pop(agent_id, 0.0)
            if episode.rewards:
                episode.rewards[-1] += extra
            episode.is_terminated, episode.is_truncated = bool(terminated), bool(truncated and not terminated)

    def end(self, terminated: bool) -> None:
        self.is_terminated, self.is_truncated = bool(terminated), not terminated
        for agent_id in list(self._pending):
            self.finish_agent(agent_id, None, terminated, not terminated)

    def _close(self, agent_id: Hashable, observation: Any, terminated: bool, truncated: bool) -> None:
        action = self._pending.pop(agent_id)
        reward = self._hanging.pop(agent_id, 0.0)
        self.agent_episodes[agent_id].add_step(observation, action, reward, terminated, truncated)

    # -- RLlib's MultiAgentEpisode API ------------------------------------------------------------
    @property
    def agent_ids(self) -> set[Hashable]:
        return set(self.mapping)

    @property
    def agent_episode_ids(self) -> dict[Hashable, str]:
        return {agent_id: episode.id_ for agent_id, episode in self.agent_episodes.items()}

    @property
    def agent_to_module_mapping(self) -> dict[Hashable, str]:
        return dict(self.mapping)

    def module_for(self, agent_id: Hashable) -> str | None:
        """The policy (RLlib: module) id the mapping function gave this agent in this episode."""
        return self.mapping.get(agent_id)

    def get_return(self) -> float:
        """The sum of all agents' rewards so far (RLlib's episode return)."""
        return float(sum(self.agent_returns.values()))

    def get_agent_returns(self) -> dict[Hashable, float]:
        return dict(self.agent_returns)

    def env_steps(self) -> int:
        return self.length

    __len__ = env_steps

    def agent_steps(self) -> int:
        return sum(len(episode) for episode in self.agent_episodes.values())

    def get_observations(self, indices: int | slice | list[int] | None = None, agent_ids: Any = None) -> dict:
        return self._per_agent("observations", indices, agent_ids)

    def get_actions(self, indices: int | slice | list[int] | None = None, agent_ids: Any = None) -> dict:
        return self._per_agent("actions", indices, agent_ids)

    def get_rewards(self, indices: int | slice | list[int] | None = None, agent_ids: Any = None) -> dict:
        """``{agent_id: rewards}`` per agent step (``indices`` picks steps, e.g. ``-1``)."""
        return self._per_agent("rewards", indices, agent_ids)

    def _per_agent(self, what: str, indices: Any, agent_ids: Any) -> dict:
        if agent_ids is not None and not isinstance(agent_ids, list | tuple | set):
            agent_ids = [agent_ids]
        out = {}
        for agent_id, episode in self.agent_episodes.items():
            items = getattr(episode, what)
            if (agent_ids is None or agent_id in agent_ids) and items:
                out[agent_id] = _pick(items, indices)
        return out


def _pick(items: list[Any], indices: int | slice | list[int] | None) -> Any:
    if indices is None:
        return list(items)
    if isinstance(indices, int | slice):
        return items[indices]
    return [items[i] for i in indices]


#: The name mapping functions and tests have used so far.
Episode = MultiAgentRunnerEpisode
