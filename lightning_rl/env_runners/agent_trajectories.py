"""Per-agent trajectory bookkeeping for multi-agent sampling.

A transition of agent ``a`` runs from an observation it acted on to its *next* observation,
which in a turn-based game may come several env steps later; every reward ``a`` receives in
between belongs to that transition. The rules:

* ``act`` opens a transition; ``observe`` (the agent's next observation) closes it;
* ``reward`` adds to the open transition; a reward that arrives before the agent ever acted in
  the episode is held and added to its first transition (RLlib's "hanging" rewards);
* ``finish`` closes an agent's open transition at its own end (it left, or the episode ended),
  flagged terminated or truncated, with its final observation when the env gave one;
* transitions never cross an agent's episode end, and no reward is dropped while an agent has
  a transition open or still to come in the episode.

``pop_completed`` hands out what closed since the last call, grouped per (env copy, agent,
policy) in time order; the last transition of each group that did not end the agent's episode is marked
truncated (the fragment was cut there), so value estimators bootstrap from its next
observation exactly as they do at a single-agent rollout's last step.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[int, Hashable]  # (env copy index, agent id)


@dataclass
class Transition:
    observation: Any
    action: Any
    extras: dict[str, Any]
    reward: float = 0.0
    next_observation: Any = None
    terminated: bool = False
    truncated: bool = False


@dataclass
class _Open:
    policy_id: str
    transition: Transition


@dataclass
class CompletedSegment:
    env_index: int
    agent_id: Hashable
    policy_id: str
    transitions: list[Transition] = field(default_factory=list)


class AgentTrajectories:
    """Open and completed transitions of every (env copy, agent) pair."""

    def __init__(self) -> None:
        self._open: dict[Key, _Open] = {}
        self._hanging: dict[Key, float] = {}
        self._completed: dict[tuple[int, Hashable, str], CompletedSegment] = {}
        self.dropped_reward = 0.0  # rewards after an agent's own end (env bug or by design)

    # -- events --------------------------------------------------------------------------------
    def act(
        self, env_index: int, agent_id: Hashable, policy_id: str, observation: Any, action: Any, extras: dict
    ) -> None:
        key = (env_index, agent_id)
        if key in self._open:
            raise RuntimeError(
                f"Agent {agent_id!r} in env copy {env_index} acted again before its previous action was "
                "followed by an observation; the env must only ask agents that observed to act."
            )
        transition = Transition(observation, action, extras, reward=self._hanging.pop(key, 0.0))
        self._open[key] = _Open(policy_id, transition)

    def reward(self, env_index: int, agent_id: Hashable, reward: float) -> None:
        key = (env_index, agent_id)
        if key in self._open:
            self._open[key].transition.reward += float(reward)
        else:
            self._hanging[key] = self._hanging.get(key, 0.0) + float(reward)

    def observe(self, env_index: int, agent_id: Hashable, observation: Any) -> None:
        """The agent's next observation, episode continuing: closes its open transition."""
        self._close((env_index, agent_id), observation, terminated=False, truncated=False)

    def finish(
        self, env_index: int, agent_id: Hashable, final_observation: Any, terminated: bool, truncated: bool
    ) -> None:
        """The agent's episode ended (it left, or the whole episode is over)."""
        key = (env_index, agent_id)
        self.dropped_reward += self._hanging.pop(key, 0.0)
        self._close(key, final_observation, terminated=terminated, truncated=truncated and not terminated)

    def end_episode(self, env_index: int, terminated: bool, final_observations: dict[Hashable, Any]) -> None:
        """Close every open transition of one env copy at its episode end."""
        for key in [k for k in self._open if k[0] == env_index]:
            self.finish(env_index, key[1], final_observations.get(key[1]), terminated, not terminated)
        for key in [k for k in self._hanging if k[0] == env_index]:
            self.dropped_reward += self._hanging.pop(key)

    def _close(self, key: Key, next_observation: Any, terminated: bool, truncated: bool) -> None:
        opened = self._open.pop(key, None)
        if opened is None:
            return
        transition = opened.transition
        # Without a final observation there is nothing better to bootstrap from than the last.
        transition.next_observation = transition.observation if next_observation is None else next_observation
        transition.terminated = terminated
        transition.truncated = truncated
        # Per policy too: an agent's seat may map to another policy in the next episode (self-play
        # swaps seats), and its transitions must not land in the first policy's batch.
        segment_key = (*key, opened.policy_id)
        segment = self._completed.get(segment_key)
        if segment is None:
            segment = self._completed[segment_key] = CompletedSegment(key[0], key[1], opened.policy_id)
        segment.transitions.append(transition)

    # -- output --------------------------------------------------------------------------------
    def pop_completed(self) -> list[CompletedSegment]:
        """Closed transitions since the last pop; each segment ends done (cut = truncated)."""
        segments = list(self._completed.values())
        self._completed = {}
        for segment in segments:
            last = segment.transitions[-1]
            if not (last.terminated or last.truncated):
                last.truncated = True
        return segments

    def num_open(self) -> int:
        return len(self._open)
