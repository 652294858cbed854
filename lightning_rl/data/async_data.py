"""Asynchronous experience (IMPALA, APPO): the runners never wait for the learner.

The runners sample continuously with the weights they have (:class:`AsyncSampler` keeps
``max_requests_in_flight_per_env_runner`` calls queued on each); the learner takes whichever
fragments are ready, and every ``broadcast_interval`` optimizer steps it sends new weights
(one ``ray.put``). Every sampled row carries the weights version it was sampled with, so the
algorithm measures the policy lag (its own version at learning time minus the row's) on every
minibatch it learns from.

Fragments become train batches of ``train_batch_size`` env steps (``ceil(train_batch_size /
(num_envs_per_env_runner x rollout_fragment_length))`` fragments, from whichever runners
delivered first), post-processed by the learner connector (``Algorithm.process_rollout``) and
put into a circular buffer of ``circular_buffer_num_batches`` batches, each of which is handed
out at most ``circular_buffer_iterations_per_batch`` times (RLlib's APPO). One ``iter()`` of the
training DataLoader is one training iteration (one Lightning epoch) of
``train_batches_per_iteration x circular_buffer_iterations_per_batch`` draws from the buffer;
each draw is one pass over a batch in minibatches of whole sequences (``minibatch_size /
rollout_fragment_length`` env rows of ``[rows, T]``: V-trace runs along time). Before each draw:

* with a circular buffer (APPO), every batch that the ready fragments complete goes in, so the
  learner always learns from the freshest data; when the runners outpace the learner, the
  oldest batches drop out (only the newest ``circular_buffer_num_batches`` batches' worth of
  fragments is even turned into tensors), and the learner waits only when no batch has uses
  left;
* without one (IMPALA: one batch, ``num_epochs`` uses), a new batch is formed once the current
  one is used up, so every sample is learned from.

The number of minibatches per iteration comes from the config alone, never from what the runners
delivered, and so does the number of collectives (one ``all_gather`` of episode stats and
filter deltas per draw): every DDP rank makes the same number of optimizer steps. Multi-agent
batches (``{policy_id: [M]}``, segments ending done) are split into the same number of
contiguous chunks per policy, each chunk's last step marked truncated so value estimators
bootstrap from its next observation, then shaped ``[1, m]``.

With ``num_env_runners=0`` the in-process runner samples synchronously when a batch is needed
(no overlap with learning, no Ray; each batch is then used ``circular_buffer_iterations_per_batch``
times): tests and small runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from tensordict import TensorDict
from torch.utils.data import DataLoader, IterableDataset

from lightning_rl.data.experience import ExperienceDataModule, identity_collate, results_to_tensordict
from lightning_rl.distributed import all_gather_object
from lightning_rl.env_runners.async_sampling import AsyncSampler
from lightning_rl.env_runners.env_runner import RunnerResult
from lightning_rl.errors import ConfigError


class CircularBuffer:
    """The last ``capacity`` batches, each handed out at most ``iterations_per_batch`` times."""

    def __init__(self, capacity: int, iterations_per_batch: int, generator: torch.Generator) -> None:
        self.capacity = int(capacity)
        self.iterations_per_batch = int(iterations_per_batch)
        self.generator = generator
        self._batches: list[list[Any]] = []  # [batch, uses left]
        self.num_dropped_unused = 0  # batches pushed out before their first use

    def __len__(self) -> int:
        return len(self._batches)

    def add(self, batch: Any) -> None:
        if len(self._batches) >= self.capacity:
            _, uses_left = self._batches.pop(0)
            self.num_dropped_unused += uses_left == self.iterations_per_batch
        self._batches.append([batch, self.iterations_per_batch])

    def sample(self) -> tuple[Any, bool]:
        """A uniformly drawn batch with uses left, and whether this is its first use."""
        if not self._batches:
            raise ConfigError("The circular buffer is empty: add a batch before sampling from it.")
        index = int(torch.randint(len(self._batches), (1,), generator=self.generator))
        entry = self._batches[index]
        first = entry[1] == self.iterations_per_batch
        entry[1] -= 1
        if entry[1] <= 0:
            self._batches.pop(index)
        return entry[0], first


class AsyncDataModule(ExperienceDataModule):
    """Continuously sampling runners, a circular buffer of batches, sequence minibatches.

    Settings (:class:`~lightning_rl.data.source.SamplingSettings`, or keyword overrides):
    ``train_batch_size``, ``minibatch_size`` (None: the whole batch), ``train_batches_per_iteration``,
    ``circular_buffer_num_batches`` / ``circular_buffer_iterations_per_batch`` (without them:
    one batch used ``num_epochs`` times), ``broadcast_interval``,
    ``max_requests_in_flight_per_env_runner``.
    """

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.sampler: AsyncSampler | None = None
        self.buffer: CircularBuffer | None = None
        self._pending: list[RunnerResult] = []  # fragments not in a batch yet, oldest first
        self._unsynced: list[RunnerResult] = []  # received since the last metrics sync (no data)
        self._broadcast_version = -1
        self._broadcast_interval = 1  # read once per iteration: maybe_broadcast runs per minibatch
        self._iteration_steps = 0
        self._iteration_clock: float | None = None
        self.num_env_steps_trained_lifetime = 0

    @property
    def uses_circular_buffer(self) -> bool:
        """APPO's buffer (fresh batches push old ones out) rather than IMPALA's one batch at a time."""
        return self.settings.circular_buffer_num_batches is not None

    # -- sizes (all from the config) --------------------------------------------------------
    def fragments_per_batch(self) -> int:
        settings = self.settings
        steps_per_fragment = settings.num_envs_per_env_runner * self.rollout_fragment_length()
        return max(1, math.ceil(settings.train_batch_size / steps_per_fragment))

    def env_steps_per_batch(self) -> int:
        return (
            self.fragments_per_batch()
            * self.settings.num_envs_per_env_runner
            * self.rollout_fragment_length()
        )

    def iterations_per_batch(self) -> int:
        """Uses of each batch: APPO's ``circular_buffer_iterations_per_batch``, else ``num_epochs``."""
        settings = self.settings
        uses = settings.circular_buffer_iterations_per_batch
        return int(uses if uses is not None else settings.num_epochs)

    def draws_per_iteration(self) -> int:
        return int(self.settings.train_batches_per_iteration) * self.iterations_per_batch()

    def minibatches_per_batch(self) -> int:
        minibatch = self.settings.minibatch_size
        if not minibatch:
            return 1
        if self.source.is_multi_agent:
            return max(1, math.ceil(self.env_steps_per_batch() / minibatch))
        rows = self.fragments_per_batch() * self.settings.num_envs_per_env_runner
        return math.ceil(rows / self.rows_per_minibatch())

    def rows_per_minibatch(self) -> int:
        minibatch = self.settings.minibatch_size
        rows = self.fragments_per_batch() * self.settings.num_envs_per_env_runner
        if not minibatch:
            return rows
        fragment = self.rollout_fragment_length()
        if minibatch % fragment:
            raise ConfigError(
                f"minibatch_size ({minibatch}) must be a multiple of rollout_fragment_length ({fragment}): "
                "V-trace learns from whole sampled sequences."
            )
        return min(rows, minibatch // fragment)

    def minibatches_per_iteration(self) -> int:
        return self.draws_per_iteration() * self.minibatches_per_batch()

    # -- lifecycle ---------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_AsyncDataset(self), batch_size=None, collate_fn=identity_collate)

    def _ensure_sampler(self) -> AsyncSampler:
        if self.sampler is None or self.sampler.group is not self.train_group:
            self.sampler = AsyncSampler(
                self.train_group,
                self.rollout_fragment_length(),
                int(self.settings.max_requests_in_flight_per_env_runner),
            )
            self._pending = []
            self._broadcast()
        if self.buffer is None:
            self.buffer = CircularBuffer(
                int(self.settings.circular_buffer_num_batches or 1),
                self.iterations_per_batch(),
                self.source.minibatch_generator,
            )
        return self.sampler

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        self.sampler = None
        self.buffer = None
        self._pending = []
        super().close()

    # -- weights -----------------------------------------------------------------------------
    def _broadcast(self) -> None:
        source = self.source
        self.sampler.broadcast(source.policy_state())
        self._broadcast_version = source.weights_version

    def maybe_broadcast(self) -> None:
        """Send new weights once ``broadcast_interval`` optimizer steps were taken since the last."""
        if self.source.weights_version - self._broadcast_version >= self._broadcast_interval:
            self._broadcast()

    # -- batches -----------------------------------------------------------------------------
    def _receive(self, results: list[RunnerResult]) -> None:
        self._pending.extend(results)
        self._unsynced.extend(replace(r, data=None) for r in results)

    def fill_buffer(self) -> None:
        """Put new batches into the buffer: every one the ready fragments complete (circular
        buffer), or one when the buffer is used up (waiting for fragments if needed)."""
        sampler = self._ensure_sampler()
        needed = self.fragments_per_batch()
        start = time.perf_counter()
        greedy = self.uses_circular_buffer
        if greedy:
            self._receive(sampler.poll())
            # Only the newest batches' worth of fragments would survive in the buffer anyway.
            surplus = (len(self._pending) // needed - self.buffer.capacity) * needed
            if surplus > 0:
                self._pending = self._pending[surplus:]
        while True:
            complete = len(self._pending) >= needed
            if len(self.buffer) and not (greedy and complete):
                break
            if not complete:
                self._receive(sampler.get())
                continue
            results, self._pending = self._pending[:needed], self._pending[needed:]
            self.buffer.add(self._to_batch(results))
        self.sampling_seconds_lifetime += time.perf_counter() - start

    def next_train_batch(self) -> Any:
        """One new batch straight from the runners (metrics recorded), bypassing the buffer."""
        self._ensure_sampler()
        needed = self.fragments_per_batch()
        while len(self._pending) < needed:
            self._receive(self.sampler.get())
        results, self._pending = self._pending[:needed], self._pending[needed:]
        batch = self._to_batch(results)
        self.sync_metrics()
        return batch

    def _to_batch(self, results: list[RunnerResult]) -> Any:
        source = self.source
        batch = results_to_tensordict(results, multi_agent=source.is_multi_agent)
        with torch.no_grad():
            if isinstance(batch, dict):
                return source.process_rollout({pid: b.to(source.device) for pid, b in batch.items()})
            return source.process_rollout(batch.to(source.device))

    def sync_metrics(self) -> None:
        """Fold the episode stats and filter deltas received since the last call into the counters,
        metrics and the source's connector state. Under DDP every rank folds in every rank's
        (one small collective, called a fixed number of times per iteration)."""
        mine, self._unsynced = self._unsynced, []
        everyone = [r for rank_results in all_gather_object(mine) for r in rank_results]
        if not everyone:
            return
        self.source.merge_connector_deltas([r.connector_deltas for r in everyone])
        self._record(everyone, None)
        self._iteration_steps += sum(r.stats.num_env_steps for r in everyone)
        metrics = self.last_metrics
        metrics["env_runners/num_env_steps_sampled"] = float(self._iteration_steps)
        elapsed = time.perf_counter() - self._iteration_clock if self._iteration_clock is not None else 0.0
        if elapsed > 0:
            metrics["env_runners/env_steps_per_s"] = self._iteration_steps / elapsed
        metrics["env_runners/num_in_flight_requests"] = float(self.sampler.num_in_flight)
        metrics["env_runners/num_weight_broadcasts"] = float(self.sampler.num_broadcasts)

    def draw(self) -> Any:
        """A batch from the buffer for one pass of minibatches."""
        batch, first_use = self.buffer.sample()
        if first_use:
            self.num_env_steps_trained_lifetime += self.env_steps_per_batch()
        metrics = self.last_metrics
        metrics["num_env_steps_trained_lifetime"] = float(self.num_env_steps_trained_lifetime)
        metrics["learners/circular_buffer_num_batches"] = float(len(self.buffer))
        metrics["learners/num_batches_dropped_unused"] = float(self.buffer.num_dropped_unused)
        return batch

    def start_iteration(self) -> None:
        self._broadcast_interval = int(self.settings.broadcast_interval)
        self._ensure_sampler()
        self._iteration_clock = time.perf_counter()
        self._iteration_steps = 0
        self.last_metrics["env_runners/num_env_steps_sampled"] = 0.0

    def minibatches(self, batch: Any) -> Iterator[Any]:
        """One pass over ``batch`` in ``minibatches_per_batch()`` minibatches of whole sequences."""
        count = self.minibatches_per_batch()
        generator = self.source.minibatch_generator
        if not isinstance(batch, dict):
            rows = batch.batch_size[0]
            size = min(rows, self.rows_per_minibatch())
            order = torch.randperm(rows, generator=generator)
            for i in range(count):
                index = order[(torch.arange(size) + i * size) % rows]
                yield batch[index.to(batch.device)]
            return
        for i in range(count):
            yield {
                pid: chunk
                for pid, b in batch.items()
                if (chunk := _contiguous_chunk(b, i, count)) is not None
            }

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "num_env_steps_trained_lifetime": self.num_env_steps_trained_lifetime}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.num_env_steps_trained_lifetime = int(state_dict.get("num_env_steps_trained_lifetime", 0))


def _contiguous_chunk(batch: TensorDict, index: int, count: int) -> TensorDict | None:
    """Chunk ``index`` of ``count`` of a flat ``[M]`` batch as ``[1, m]``, cut marked truncated."""
    total = batch.batch_size[0]
    size = math.ceil(total / count) if total else 0
    start, stop = index * size, min(total, (index + 1) * size)
    if stop <= start:
        return None
    chunk = batch[start:stop].clone()
    terminated = chunk["next", "terminated"]
    if not bool(chunk["next", "done"][-1].any()):
        chunk["next", "truncated"][-1] = ~terminated[-1]
        chunk["next", "done"][-1] = True
    return chunk.unsqueeze(0)


class _AsyncDataset(IterableDataset):
    def __init__(self, datamodule: AsyncDataModule) -> None:
        self.datamodule = datamodule

    def __len__(self) -> int:
        return self.datamodule.minibatches_per_iteration()

    def __iter__(self) -> Iterator[Any]:
        datamodule = self.datamodule
        datamodule.start_iteration()
        for _ in range(datamodule.draws_per_iteration()):
            datamodule.maybe_broadcast()
            datamodule.fill_buffer()
            datamodule.sync_metrics()
            for minibatch in datamodule.minibatches(datamodule.draw()):
                datamodule.maybe_broadcast()
                yield minibatch
