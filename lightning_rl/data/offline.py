"""Offline experience (BC, MARWIL, CQL): minibatches read from recorded data, not sampled.

The data is env-side (raw observations, the actions the env received), so every minibatch
passes through the algorithm's env-to-module connectors exactly as EnvRunner samples do
(observation filters learn their statistics from the data and travel to the evaluation
runners and into checkpoints like online ones). Sources:

* Parquet (a file, directory, glob, or list of them) read whole with pyarrow when the data
  fits ``input_memory_budget_mb`` (``input_read_method="auto"``) or when asked
  (``"pyarrow"``): shuffled minibatches without replacement, reshuffled every pass;
* the same files streamed through Ray Data (``"ray"``, or ``"auto"`` above the budget):
  ``ray.data.read_parquet`` with the file order shuffled each pass, per-block preparation
  (returns for MARWIL) on Ray workers, a local shuffle buffer, and the object store capped at
  the budget, so memory stays bounded whatever the data size;
* in memory: a list of TensorDicts or a torchrl replay buffer (``OfflineDataModule(input_=...)``
  or the algorithm's ``input_``), with env-side values in torchrl's key layout.

The source is an :class:`~lightning_rl.data.source.OfflineExperienceSource`: an experience
source that also names the columns its losses need and exposes the policy's connectors.

One Lightning epoch is one iteration of ``dataset_num_iters_per_learner`` gradient updates of
``train_batch_size`` rows each, the same on every DDP rank (each rank reads its own share of
the files, or its own shuffle of them), so the gradient all-reduce never waits on an empty
shard. Evaluation runs real episodes on evaluation EnvRunners (the base DataModule's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch.utils.data import DataLoader, IterableDataset

from lightning_rl.connectors.base import EnvToModule
from lightning_rl.data.experience import ExperienceDataModule, identity_collate
from lightning_rl.data.source import OfflineExperienceSource, only_policy_id
from lightning_rl.errors import ConfigError
from lightning_rl.offline.arrow import pa
from lightning_rl.offline.reader import inspect_files, is_path_input, read_files, resolve_input_files
from lightning_rl.offline.rows import (
    BOOTSTRAP_DISCOUNT,
    BOOTSTRAP_OBSERVATION,
    RETURN_TO_GO,
    OfflineRequirements,
    RowConverter,
    add_return_columns,
    replay_buffer_rows,
)
from lightning_rl.offline.schema import NEXT_OBSERVATION, OBSERVATION, EpisodeLayout, assemble_structure
from lightning_rl.ray_cluster import ensure_ray

READ_METHODS = ("auto", "pyarrow", "ray")


class OfflineDataModule(ExperienceDataModule):
    """Serves offline minibatches for training and real episodes for evaluation.

    Keyword ``overrides`` replace the source's settings of the same name, including
    ``input_`` (which may be in-memory data here: a list of TensorDicts or a replay buffer).
    """

    source: OfflineExperienceSource

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.reader: _InMemorySource | _RayStreamSource | None = None  # where minibatches are read from
        self.layout: EpisodeLayout | None = None
        self.requirements = OfflineRequirements()
        self.num_env_steps_trained_lifetime = 0
        self.read_method: str | None = None
        self._rows_this_iteration = 0
        self._read_seconds_this_iteration = 0.0

    # -- configuration ----------------------------------------------------------------------
    def input_data(self) -> Any:
        """The configured input: an override, else the source's (in-memory data or paths)."""
        return self.settings.input_

    def setup(self, stage: str) -> None:
        # No training runners: the base builds only what evaluation needs (lazily).
        super().setup("validate" if stage == "fit" else stage)
        if stage == "fit" and self.reader is None:
            self.reader = self._build_reader()

    def _build_reader(self) -> _InMemorySource | _RayStreamSource:
        source = self.source
        if source.is_multi_agent:
            raise ConfigError("Offline training supports single-agent envs; this env is multi-agent.")
        policy_id = only_policy_id(source)
        _check_row_wise_connectors(source.env_to_module_pipelines[policy_id])
        observation_space, action_space = source.policy_env_spaces(policy_id)
        self.layout = EpisodeLayout(observation_space, action_space)
        self.requirements = source.offline_requirements()
        converter = RowConverter(self.layout, list(source.module_to_env_specs[policy_id]), self.requirements)
        settings = self.settings
        data = settings.input_
        rank, world = self._rank_and_world()
        generator = torch.Generator()
        seed = settings.seed
        generator.manual_seed((0 if seed is None else int(seed)) + 7919 * rank)
        if data is None:
            raise ConfigError(
                f"{type(source).__name__} learns from offline data: set input_ (a directory, file or glob "
                "of Parquet episodes, e.g. config.offline_data(input_='path/')), or pass "
                "OfflineDataModule(input_=[TensorDict, ...])."
            )
        if not is_path_input(data):
            self.read_method = "memory"
            if hasattr(data, "storage") and hasattr(data, "sample"):
                data = [replay_buffer_rows(data)]
            if isinstance(data, TensorDictBase):
                data = [data]
            if not isinstance(data, list | tuple) or not all(isinstance(d, TensorDictBase) for d in data):
                raise ConfigError(
                    f"input_ must be Parquet paths, a list of TensorDicts or a torchrl replay buffer, got "
                    f"{type(data).__name__}."
                )
            return _InMemorySource(converter.from_tensordicts(list(data)), generator)
        files = resolve_input_files(data)
        info = inspect_files(files, self.layout, converter.columns())
        method = settings.input_read_method
        budget = int(float(settings.input_memory_budget_mb) * 2**20)
        if method == "auto":
            method = "pyarrow" if info.num_bytes <= budget else "ray"
        self.read_method = method
        if method == "pyarrow":
            table = read_files(files, converter.columns())
            if self.requirements.returns:
                table = add_return_columns(table, self.layout, self.requirements.gamma)
            return _InMemorySource(converter.from_table(table), generator)
        if world > 1 and len(files) >= world:
            files = files[rank::world]
        return _RayStreamSource(
            files,
            converter,
            self.layout,
            self.requirements,
            memory_budget_bytes=budget,
            shuffle_buffer_rows=int(settings.input_shuffle_buffer_size),
            row_bytes=max(1, info.num_bytes // max(1, info.num_rows)),
            seed=int(generator.initial_seed()),
        )

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def close(self) -> None:
        super().close()
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    # -- minibatches -------------------------------------------------------------------------
    def updates_per_iteration(self) -> int:
        return int(self.settings.dataset_num_iters_per_learner)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_OfflineDataset(self), batch_size=None, collate_fn=identity_collate)

    def next_batch(self) -> TensorDict:
        """One minibatch of ``train_batch_size`` rows, through the env-to-module connectors."""
        start = time.perf_counter()
        raw = self.reader.next_batch(int(self.settings.train_batch_size))
        batch = self.to_module_batch(raw)
        self._read_seconds_this_iteration += time.perf_counter() - start
        rows = int(raw.batch_size[0])
        self._rows_this_iteration += rows
        self.num_env_steps_trained_lifetime += rows
        return batch.to(self.source.device)

    def to_module_batch(self, raw: TensorDict) -> TensorDict:
        """Env-side rows -> what the networks eat (connectors run here, updating filters)."""
        source = self.source
        pipeline = source.env_to_module_pipelines[only_policy_id(source)]
        space = self.layout.observation_space

        def observations(column: str, update: bool) -> Any:
            structure = assemble_structure(space, column, lambda c: raw[c])
            return pipeline(structure, update=update) if len(pipeline) else structure

        batch: dict[str, Any] = {
            OBSERVATION: observations(OBSERVATION, True),
            "action": raw["action"],
            "next": dict(raw["next"].items()),
        }
        if self.requirements.next_observation:
            batch["next"][OBSERVATION] = observations(NEXT_OBSERVATION, False)
        if self.requirements.returns:
            batch[RETURN_TO_GO] = raw[RETURN_TO_GO]
            batch[BOOTSTRAP_DISCOUNT] = raw[BOOTSTRAP_DISCOUNT]
            batch[BOOTSTRAP_OBSERVATION] = observations(BOOTSTRAP_OBSERVATION, False)
        return TensorDict(batch, batch_size=raw.batch_size)

    def start_iteration(self) -> None:
        """Report the reading of the iterations so far (logged at the first minibatch)."""
        seconds = self._read_seconds_this_iteration
        self.last_metrics = {
            "num_env_steps_trained_lifetime": float(self.num_env_steps_trained_lifetime),
            "offline_data/num_passes": float(self.reader.num_passes if self.reader is not None else 0),
            "time_total_s": self.time_total_s,
        }
        if seconds > 0:
            self.last_metrics["offline_data/rows_per_s"] = self._rows_this_iteration / seconds
        self._rows_this_iteration = 0
        self._read_seconds_this_iteration = 0.0

    def end_iteration(self) -> None:
        """Publish the filter state the connectors learned from this iteration's rows."""
        source = self.source
        policy_id = only_policy_id(source)
        pipeline = source.env_to_module_pipelines[policy_id]
        if len(pipeline):
            pipeline.pop_deltas()
            source.connector_state[policy_id] = pipeline.get_state()

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["num_env_steps_trained_lifetime"] = self.num_env_steps_trained_lifetime
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.num_env_steps_trained_lifetime = int(state_dict.get("num_env_steps_trained_lifetime", 0))


class _OfflineDataset(IterableDataset):
    """One ``iter()`` = one iteration: a fixed number of minibatches."""

    def __init__(self, datamodule: OfflineDataModule) -> None:
        self.datamodule = datamodule

    def __len__(self) -> int:
        return self.datamodule.updates_per_iteration()

    def __iter__(self) -> Iterator[TensorDict]:
        datamodule = self.datamodule
        datamodule.start_iteration()
        try:
            for _ in range(len(self)):
                yield datamodule.next_batch()
        finally:
            datamodule.end_iteration()


def _check_row_wise_connectors(pipeline: Any) -> None:
    """Offline rows are shuffled, so a connector with per-episode state cannot be fed."""
    for connector in pipeline:
        kind = type(connector)
        if any(
            getattr(kind, hook) is not getattr(EnvToModule, hook)
            for hook in ("reset", "episode_start", "record_step")
        ):
            raise ConfigError(
                f"Offline training runs the env-to-module connectors on shuffled rows, but {connector!r} "
                "keeps per-episode state (frame stacks, previous actions/rewards); use connectors that work "
                "row by row (FlattenObservations, MeanStdFilter) or stack frames in the env."
            )


class _InMemorySource:
    """All rows in one TensorDict; minibatches without replacement, a new shuffle every pass."""

    def __init__(self, rows: TensorDict, generator: torch.Generator) -> None:
        self.rows = rows
        self.generator = generator
        self.num_rows = int(rows.batch_size[0])
        self.num_passes = 0
        self._order = torch.randperm(self.num_rows, generator=generator)
        self._position = 0

    def next_batch(self, size: int) -> TensorDict:
        pieces = []
        needed = size
        while needed > 0:
            if self._position >= self.num_rows:
                self._order = torch.randperm(self.num_rows, generator=self.generator)
                self._position = 0
                self.num_passes += 1
            take = min(needed, self.num_rows - self._position)
            pieces.append(self._order[self._position : self._position + take])
            self._position += take
            needed -= take
        index = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return self.rows[index]

    def close(self) -> None:
        self.rows = None


class _RayStreamSource:
    """Streams the files through Ray Data, pass after pass, never holding the data set."""

    def __init__(
        self,
        files: list[str],
        converter: RowConverter,
        layout: EpisodeLayout,
        requirements: OfflineRequirements,
        *,
        memory_budget_bytes: int,
        shuffle_buffer_rows: int,
        row_bytes: int,
        seed: int,
    ) -> None:
        ensure_ray(1)
        self.files = files
        self.converter = converter
        self.layout = layout
        self.requirements = requirements
        self.memory_budget_bytes = memory_budget_bytes
        # The shuffle buffer lives in this process: keep it to a quarter of the budget.
        self.shuffle_buffer_rows = max(1, min(shuffle_buffer_rows, memory_budget_bytes // (4 * row_bytes)))
        self.seed = seed
        self.num_passes = 0
        self._batches: Iterator[pa.Table] | None = None
        self._carry: pa.Table | None = None

    def dataset(self, pass_index: int) -> Any:
        import ray.data
        from ray.data import DataContext
        from ray.data.datasource import FileShuffleConfig

        context = DataContext.get_current()
        context.execution_options.resource_limits = context.execution_options.resource_limits.copy(
            object_store_memory=self.memory_budget_bytes
        )
        # Blocks well below the budget, so the streaming executor's backpressure can keep the
        # blocks in flight (and the pages this process maps) within it.
        context.target_max_block_size = max(2**20, self.memory_budget_bytes // 16)
        context.enable_progress_bars = False
        # Ray Data logs its execution plan at INFO on every pass; keep that out of training logs
        # unless the user configured the logger.
        executor_log = logging.getLogger("ray.data._internal.execution.streaming_executor")
        if executor_log.level == logging.NOTSET:
            executor_log.setLevel(logging.WARNING)
        dataset = ray.data.read_parquet(
            self.files,
            columns=self.converter.columns(),
            shuffle=FileShuffleConfig(seed=self.seed + pass_index),
        )
        if self.requirements.returns:
            dataset = dataset.map_batches(
                add_return_columns,
                batch_format="pyarrow",
                batch_size=None,
                fn_args=(self.layout, self.requirements.gamma),
            )
        return dataset

    def _next_table(self, size: int) -> pa.Table:
        while True:
            if self._batches is None:
                self._batches = iter(
                    self.dataset(self.num_passes).iter_batches(
                        batch_size=size,
                        batch_format="pyarrow",
                        local_shuffle_buffer_size=self.shuffle_buffer_rows,
                        local_shuffle_seed=self.seed + self.num_passes,
                        prefetch_batches=1,
                    )
                )
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None
                self.num_passes += 1

    def next_batch(self, size: int) -> TensorDict:
        parts = [self._carry] if self._carry is not None else []
        rows = 0 if self._carry is None else self._carry.num_rows
        while rows < size:
            table = self._next_table(size)
            parts.append(table)
            rows += table.num_rows
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        self._carry = table.slice(size) if table.num_rows > size else None
        return self.converter.from_table(table.slice(0, size))

    def close(self) -> None:
        self._batches = None
        self._carry = None


__all__ = ["READ_METHODS", "OfflineDataModule"]
