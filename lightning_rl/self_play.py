"""Self-play and league training for two-player games (RLlib's self-play/league examples).

The learner meets frozen snapshots of itself: :class:`SelfPlayCallback` adds a snapshot
(``Algorithm.add_policy(..., trainable=False)``) whenever the learner's win rate against its
current opponents passes a threshold, and switches the mapping so new episodes draw their
opponent from the base opponents and all snapshots. :class:`LeagueCallback` adds a main
exploiter that trains only against the main policy; the exploiter is snapshotted (and the
snapshot joins main's opponents) whenever it beats main often enough.

Seats and opponents are drawn from ``episode.id`` by :class:`Matchmaking`, a picklable
mapping function, so every runner agrees and runs are reproducible.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np

from lightning_rl.env_runners.multi_agent_env_runner import MultiAgentEnvRunner
from lightning_rl.errors import ConfigError


class Matchmaking:
    """Policy mapping for two-seat games: which policy sits where, per episode.

    ``pairings`` is a list of ``(policy, [opponents])``; episode ``k`` uses pairing
    ``k % len(pairings)``, seats the policy at ``agents[(k // len(pairings)) % 2]`` and gives the
    other seat an opponent drawn by a hash of the episode id.
    """

    def __init__(self, pairings: Sequence[tuple[str, Sequence[str]]], agents: Sequence[Hashable]) -> None:
        if len(agents) != 2:
            raise ConfigError(f"Matchmaking seats two agents, got {list(agents)}")
        if not pairings or any(not opponents for _, opponents in pairings):
            raise ConfigError(f"Every pairing needs a policy and at least one opponent, got {pairings!r}")
        self.pairings = [(policy, list(opponents)) for policy, opponents in pairings]
        self.agents = list(agents)

    def to_config(self) -> dict[str, Any]:
        """Plain data, so checkpoints and YAML configs can hold the mapping."""
        return {
            "class_path": f"{__name__}.Matchmaking",
            "init_args": {"pairings": [[p, list(o)] for p, o in self.pairings], "agents": list(self.agents)},
        }

    def __call__(self, agent_id: Hashable, episode: Any = None, **kwargs: Any) -> str:
        episode_id = 0 if episode is None else int(episode.id)
        policy, opponents = self.pairings[episode_id % len(self.pairings)]
        seat = self.agents[(episode_id // len(self.pairings)) % 2]
        if agent_id == seat:
            return policy
        return opponents[zlib.crc32(str(episode_id).encode()) % len(opponents)]


def win_rate(episodes: Sequence[dict[str, float]], policy_id: str) -> tuple[float, int]:
    """Fraction of episodes ``policy_id`` played and won (positive return), and how many it played."""
    played = [e[policy_id] for e in episodes if policy_id in e]
    if not played:
        return 0.0, 0
    return float(np.mean([r > 0 for r in played])), len(played)


class SelfPlayCallback(pl.Callback):
    """Snapshot the learner into a frozen opponent whenever it wins often enough.

    Args:
        main_policy: the learning policy.
        agents: the game's two agent ids (seats).
        base_opponents: opponents from the start (e.g. ``["random"]``).
        win_rate_threshold: snapshot when the learner's win rate reaches this.
        min_episodes: episodes (since the last snapshot) the win rate needs.
        max_snapshots: keep adding snapshots up to this many.
    """

    def __init__(
        self,
        main_policy: str = "main",
        agents: Sequence[Hashable] = ("player_0", "player_1"),
        base_opponents: Sequence[str] = ("random",),
        win_rate_threshold: float = 0.8,
        min_episodes: int = 200,
        max_snapshots: int = 10,
    ) -> None:
        self.main_policy = main_policy
        self.agents = list(agents)
        self.base_opponents = list(base_opponents)
        self.win_rate_threshold = win_rate_threshold
        self.min_episodes = min_episodes
        self.max_snapshots = max_snapshots
        self.snapshots: list[str] = []
        self._window: list[dict[str, float]] = []

    def opponents(self) -> list[str]:
        return self.base_opponents + self.snapshots

    def matchmaking(self) -> Matchmaking:
        return Matchmaking([(self.main_policy, self.opponents())], self.agents)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        pl_module.set_policy_mapping_fn(self.matchmaking())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._window += pl_module.experience.last_episode_policy_returns
        rate, played = win_rate(self._window, self.main_policy)
        pl_module.log("self_play/win_rate", rate, on_epoch=True, batch_size=1)
        pl_module.log("self_play/num_snapshots", float(len(self.snapshots)), on_epoch=True, batch_size=1)
        if (
            played >= self.min_episodes
            and rate >= self.win_rate_threshold
            and len(self.snapshots) < self.max_snapshots
        ):
            name = f"{self.main_policy}_v{len(self.snapshots)}"
            pl_module.add_policy(name, from_policy=self.main_policy, trainable=False)
            self.snapshots.append(name)
            pl_module.set_policy_mapping_fn(self.matchmaking())
            self._window = []
        elif played >= 4 * self.min_episodes:
            self._window = self._window[-self.min_episodes :]

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": list(self.snapshots)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.snapshots = list(state_dict.get("snapshots", []))


class LeagueCallback(SelfPlayCallback):
    """Self-play plus a main exploiter (AlphaStar's league, reduced to its core).

    ``main`` plays its snapshots, the base opponents and the exploiter; ``exploiter`` plays
    only ``main``. When the exploiter's win rate against main reaches the threshold it is
    snapshotted (``<exploiter>_v<n>``, frozen, joining main's opponents) and restarts from
    main's current weights.
    """

    def __init__(self, *args: Any, exploiter_policy: str = "main_exploiter", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exploiter_policy = exploiter_policy
        self.exploiter_snapshots: list[str] = []
        self._exploiter_window: list[dict[str, float]] = []

    def opponents(self) -> list[str]:
        return [*super().opponents(), self.exploiter_policy, *self.exploiter_snapshots]

    def matchmaking(self) -> Matchmaking:
        return Matchmaking(
            [(self.main_policy, self.opponents()), (self.exploiter_policy, [self.main_policy])], self.agents
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        episodes = pl_module.experience.last_episode_policy_returns
        self._exploiter_window += [
            e for e in episodes if self.exploiter_policy in e and self.main_policy in e
        ]
        rate, played = win_rate(self._exploiter_window, self.exploiter_policy)
        pl_module.log("league/exploiter_win_rate", rate, on_epoch=True, batch_size=1)
        if played >= self.min_episodes and rate >= self.win_rate_threshold:
            name = f"{self.exploiter_policy}_v{len(self.exploiter_snapshots)}"
            pl_module.add_policy(name, from_policy=self.exploiter_policy, trainable=False)
            self.exploiter_snapshots.append(name)
            exploiter = pl_module.policies[self.exploiter_policy]
            exploiter.load_state_dict(pl_module.policies[self.main_policy].state_dict())
            pl_module.set_policy_mapping_fn(self.matchmaking())
            self._exploiter_window = []
        super().on_train_epoch_end(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "exploiter_snapshots": list(self.exploiter_snapshots)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.exploiter_snapshots = list(state_dict.get("exploiter_snapshots", []))


def play_matches(
    algorithm: Any,
    policy_id: str,
    opponent_id: str,
    num_games: int,
    agents: Sequence[Hashable] = ("player_0", "player_1"),
    num_envs: int = 10,
    explore: bool = False,
) -> dict[str, float]:
    """Play ``num_games`` of ``policy_id`` against ``opponent_id``, alternating seats.

    Returns ``{"win_rate", "draw_rate", "loss_rate", "games"}`` for ``policy_id``, from real
    episodes on an in-process multi-agent runner with the training connectors.
    """
    spec = algorithm.env_runner_spec(num_envs=num_envs, evaluation=True)
    spec.policy_mapping_fn = Matchmaking([(policy_id, [opponent_id])], agents)
    runner = MultiAgentEnvRunner(spec)
    state = algorithm.policy_state()
    state.pop("policy_mapping_fn", None)
    try:
        stats = runner.evaluate(num_games, explore=explore, state=state).stats
    finally:
        runner.stop()
    returns = np.array([episode[policy_id] for episode in stats.policy_returns])
    return {
        "win_rate": float((returns > 0).mean()),
        "draw_rate": float((returns == 0).mean()),
        "loss_rate": float((returns < 0).mean()),
        "games": len(returns),
    }
