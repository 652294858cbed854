"""Episode bookkeeping of the policy server: transitions per client episode, segments, batches.

A transition closes when the observation after its action arrives (the next ``get_action``
or the ``end_episode``), so every stored transition has its true next observation. Closed
transitions of an episode form a *segment*; a segment reaches the learner only when it ends
properly: at the episode's end with the client's terminated/truncated flags, or (batch mode
``truncate_episodes``) at the end of a ``sample`` call, marked truncated so value bootstrapping
uses that true next observation (the episode's next piece then starts with the transition
whose action was sent before the cut, with the log-prob it was sampled with). What a
disconnected client had not yet delivered is dropped.
The batch of one ``sample`` call is all delivered segments back to back: ``[1, M]`` in
torchrl's key layout, each segment ending with ``("next", "done")`` set, which is what GAE and
n-step returns need (the same layout the multi-agent runner emits per policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_rl._tree import map_structure
from lightning_rl.env_runners.transition_batch import transitions_to_batch


@dataclass
class Step:
    """One closed transition (module-side observation and action, as the learner sees them)."""

    observation: Any
    action: torch.Tensor
    extras: dict[str, torch.Tensor]
    reward: float
    next_observation: Any


@dataclass
class LiveEpisode:
    """A running episode of one client connection (server-side inference)."""

    episode_id: str
    training: bool = True
    explore: bool = True
    total_return: float = 0.0
    length: int = 0
    # The last action's row, waiting for the observation that follows it.
    pending: tuple[Any, torch.Tensor, dict[str, torch.Tensor]] | None = None
    reward_since_action: float = 0.0
    # Closed transitions not yet delivered to the learner.
    steps: list[Step] = field(default_factory=list)

    def close_pending(self, next_observation: Any) -> Step | None:
        """Close the transition of the last action with the observation that followed it."""
        if self.pending is None:
            return None
        observation, action, extras = self.pending
        step = Step(observation, action, extras, self.reward_since_action, next_observation)
        self.pending = None
        self.reward_since_action = 0.0
        if self.training:
            self.steps.append(step)
        return step


def steps_to_segment(steps: list[Step], terminated: bool, truncated: bool) -> dict[str, Any]:
    """Closed transitions -> one segment ``[T]``; the flags apply to its last transition."""
    length = len(steps)
    terminated_column = torch.zeros((length, 1), dtype=torch.bool)
    truncated_column = torch.zeros((length, 1), dtype=torch.bool)
    terminated_column[-1, 0] = terminated
    truncated_column[-1, 0] = truncated
    return transitions_to_batch(steps, terminated_column, truncated_column)


def concat_segments(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """Segments back to back, with a leading axis of 1: the ``[1, M]`` single-agent batch layout."""

    def join(*parts: torch.Tensor) -> torch.Tensor:
        return torch.cat(parts).unsqueeze(0)

    return _zip_structures(join, segments)


def _zip_structures(fn: Any, trees: list[Any]) -> Any:
    first = trees[0]
    if isinstance(first, dict):
        return {k: _zip_structures(fn, [t[k] for t in trees]) for k in first}
    if isinstance(first, tuple):
        return tuple(_zip_structures(fn, [t[i] for t in trees]) for i in range(len(first)))
    return fn(*trees)


def row(tree: Any, index: int) -> Any:
    return map_structure(lambda x: x[index], tree)
