"""A league-growing self-play callback written against RLlib's callback and algorithm API.

RLlib's self-play example (``examples/multi_agent/self_play_with_open_spiel.py``) passes its
own ``SelfPlayCallback(win_rate_threshold=...)`` class to ``config.callbacks``. This is our
version of that class (same constructor, hooks, metric name and ``league_size`` result key),
written only against the API RLlib documents: ``RLlibCallback`` hooks, ``episode.module_for``,
``episode.get_rewards``, ``metrics_logger.log_value`` and, on the algorithm, ``get_module``,
``add_module(module_spec=RLModuleSpec.from_module(...))`` and ``set_state`` of the learner's
RLModule state. Because the port passes it through exactly those calls, it shows that a
callback using them runs on lightning-rl's ``TrainingRun`` unchanged.

Agent ids are player numbers ``0``/``1`` (OpenSpiel's; the PettingZoo twin renames its seats).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from lightning_rl import RLlibCallback, RLModuleSpec

MAIN = "main"
ENV_RUNNER_RESULTS = "env_runners"  # RLlib's result key for the runners' metrics


class SelfPlayCallback(RLlibCallback):
    """Snapshot ``main`` as a new frozen opponent whenever its win rate passes a threshold."""

    def __init__(self, win_rate_threshold: float) -> None:
        super().__init__()
        self.win_rate_threshold = win_rate_threshold
        self.num_snapshots = 0  # opponents main_v1 ... main_v<num_snapshots>; random before any
        self.matchups: Counter[tuple[str, str]] = Counter()

    def on_episode_end(self, *, episode: Any, metrics_logger: Any, **kwargs: Any) -> None:
        """Log whether main won this game (last reward +1), averaged over the last 100 games."""
        main_seat = 0 if episode.module_for(0) == MAIN else 1
        rewards = episode.get_rewards()
        if main_seat in rewards:
            metrics_logger.log_value("win_rate", rewards[main_seat][-1] == 1.0, reduce="mean", window=100)

    def on_train_result(
        self, *, algorithm: Any, result: dict, metrics_logger: Any = None, **kwargs: Any
    ) -> None:
        win_rate = result[ENV_RUNNER_RESULTS]["win_rate"]
        if win_rate > self.win_rate_threshold:
            self.num_snapshots += 1
            snapshot_id = f"main_v{self.num_snapshots}"
            print(f"iteration {algorithm.iteration}: win rate {win_rate:.2f}, new opponent {snapshot_id}")
            main = algorithm.get_module(MAIN)
            algorithm.add_module(
                module_id=snapshot_id,
                module_spec=RLModuleSpec.from_module(main),
                new_agent_to_module_mapping_fn=self._mapping_against_snapshots,
            )
            # add_module builds a freshly initialised module: give it main's current weights.
            state = {"learner_group": {"learner": {"rl_module": {snapshot_id: main.get_state()}}}}
            algorithm.set_state(state)
        else:
            print(f"iteration {algorithm.iteration}: win rate {win_rate:.2f}, keep learning")
        result["league_size"] = self.num_snapshots + 2  # main and random count too
        print(f"matchups so far: {dict(self.matchups)}")

    def _mapping_against_snapshots(self, agent_id: Any, episode: Any, **kwargs: Any) -> str:
        """Main takes seat ``hash(episode.id_) % 2`` (so it moves first in about half the games);
        the other seat is one of main's snapshots, drawn uniformly (random no longer plays)."""
        if hash(episode.id_) % 2 == agent_id:
            return MAIN
        opponent = f"main_v{random.randint(1, self.num_snapshots)}"
        self.matchups[(MAIN, opponent)] += 1
        return opponent
