"""What every replaying DataModule shares: a fixed update schedule and a seeded, resumable draw stream.

Transition replay (DQN, SAC, CQL online) and sequence replay (DreamerV3) differ in what they store
and what one update draws, but not in how an iteration runs: collect one iteration's steps, then
make a number of updates that depends only on the config and the iteration number (so every DDP
rank makes the same number), drawing with a generator that a checkpoint carries on from.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from lightning_rl.data.experience import ExperienceDataModule, identity_collate


def updates_per_iteration(ratio: float | None, steps_per_iteration: int, steps_per_update: int) -> Fraction:
    """Gradient updates per iteration as an exact fraction of replayed to sampled steps.

    ``ratio`` is RLlib's ``training_intensity`` (or DreamerV3's ``training_ratio``); ``None``
    means one update per iteration, RLlib's "native ratio".
    """
    if ratio is None:
        return Fraction(1)
    return Fraction(str(ratio)) * steps_per_iteration / steps_per_update


def updates_in_iteration(rate: Fraction, iteration: int) -> int:
    """Updates of the ``iteration``-th learning iteration at ``rate`` per iteration; fractions
    carry over exactly, so the count depends only on the config and the iteration (DDP lockstep)."""
    return math.floor((iteration + 1) * rate) - math.floor(iteration * rate)


class ReplayingDataModule(ExperienceDataModule, abc.ABC):
    """Base of the replay DataModules: one ``iter()`` of the DataLoader is one iteration.

    Subclasses say how many updates an iteration makes (:meth:`updates_per_iteration`), how
    they collect (:meth:`collect`) and what those updates draw (:meth:`replay`); draws use
    :attr:`draw_generator`, seeded once from the ``seed`` setting and the DDP rank.
    """

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.num_learning_iterations = 0
        self.draw_generator = torch.Generator()
        self._draws_seeded = False

    # -- the update schedule ----------------------------------------------------------------
    def sampling_width(self) -> int:
        """Env copies sampled per iteration on this rank."""
        settings = self.settings
        return max(1, settings.num_env_runners) * settings.num_envs_per_env_runner

    def steps_per_iteration(self) -> int:
        return self.rollout_fragment_length() * self.sampling_width()

    @abc.abstractmethod
    def updates_per_iteration(self) -> Fraction: ...

    def updates_in_iteration(self, iteration: int) -> int:
        return updates_in_iteration(self.updates_per_iteration(), iteration)

    def batches_per_iteration(self) -> int:
        """Batches the DataLoader yields per iteration (an upper bound when updates vary by one)."""
        return math.ceil(self.updates_per_iteration())

    # -- one iteration ----------------------------------------------------------------------
    @abc.abstractmethod
    def collect(self) -> None:
        """Sample this iteration's steps and store them."""

    @abc.abstractmethod
    def replay(self, count: int) -> Iterator[Any]:
        """The batches of ``count`` updates, on the source's device."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_ReplayIteration(self), batch_size=None, collate_fn=identity_collate)

    # -- lifecycle and checkpointing ----------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and not self._draws_seeded:
            # Once: TrainingRun re-enters fit() every iteration; a restored state wins.
            seed = self.settings.seed
            if seed is not None:
                self.draw_generator.manual_seed(int(seed) + self._rank_seed_offset())
            self._draws_seeded = True

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["num_learning_iterations"] = self.num_learning_iterations
        # Draws continue the same random stream after a resume.
        state["replay_generator_state"] = self.draw_generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.num_learning_iterations = int(state_dict.get("num_learning_iterations", 0))
        generator_state = state_dict.get("replay_generator_state")
        if generator_state is not None:
            self.draw_generator.set_state(generator_state)
            self._draws_seeded = True


class _ReplayIteration(IterableDataset):
    """One ``iter()`` = one iteration: collect, then replay this iteration's updates."""

    def __init__(self, datamodule: ReplayingDataModule) -> None:
        self.datamodule = datamodule

    def __len__(self) -> int:
        return self.datamodule.batches_per_iteration()

    def __iter__(self) -> Iterator[Any]:
        datamodule = self.datamodule
        datamodule.collect()
        count = datamodule.updates_in_iteration(datamodule.num_learning_iterations)
        datamodule.num_learning_iterations += 1
        yield from datamodule.replay(count)
