"""The EnvRunner side of recording: env steps in, whole episodes out to Parquet.

An :class:`EpisodeRecorder` lives inside each EnvRunner that records (so recording scales with
the runners). The runner hands it what the env saw and returned each step (raw observations,
the actions the env received, rewards, flags, the policy's log-probabilities, info); at the
end of each ``sample`` call the recorder sorts the fragment into episodes and passes finished
ones to the :class:`~lightning_rl.offline.writer.ParquetFileWriter`. Episodes still running
wait for their end (so a file holds whole episodes, and returns can be computed over them),
up to one row group's worth of memory; beyond that, and whenever the runner flushes or
stops, they are written as chunks that a later file continues (same ``episode_id``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from lightning_rl.offline.arrow import pa
from lightning_rl.offline.config import OutputConfig
from lightning_rl.offline.schema import (
    ACTION_LOG_PROB,
    EPISODE_ID,
    REWARD,
    TERMINATED,
    TRUNCATED,
    EpisodeLayout,
    InfoField,
    T,
    flatten_structure,
)
from lightning_rl.offline.writer import ParquetFileWriter

_SEQ = "__episode_seq__"  # recorder-internal episode number of each row (mapped to ids on write)
_MASK = "#valid"  # suffix of an info column's validity mask
_SKIPPED_INFO = {"final_obs", "final_info", "final_observation", "episode"}


@dataclass
class RecordingSpec:
    """What an EnvRunner builds its recorder from: plain data, sent to Ray actors with the spec.

    Args:
        output: directory the runner's Parquet files go to (created if missing).
        config: :class:`~lightning_rl.offline.config.OutputConfig` keys.
        metadata: extra plain data stored in every file's metadata (env name, ...).
    """

    output: str
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def build(
        self, observation_space: gym.Space, action_space: gym.Space, num_envs: int, worker_index: int
    ) -> Any:
        return EpisodeRecorder(
            self.output,
            OutputConfig.from_dict(self.config),
            observation_space,
            action_space,
            num_envs,
            metadata={**self.metadata, "worker_index": int(worker_index)},
        )


def recording_spec(
    output: str | None, output_config: dict[str, Any] | None, env: str | None
) -> RecordingSpec | None:
    """The recorder recipe of an algorithm's ``output``/``output_config`` settings (None: off)."""
    if output is None:
        return None
    return RecordingSpec(str(output), dict(output_config or {}), {"env": env})


class EpisodeRecorder:
    """Collects one runner's env steps and writes them as episode rows (see the module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        config: OutputConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.directory = str(directory)
        self.config = config
        self.layout = EpisodeLayout(observation_space, action_space)
        self.num_envs = int(num_envs)
        self.metadata = dict(metadata or {})
        self.writer: ParquetFileWriter | None = None
        self._steps: list[dict[str, np.ndarray]] = []
        self._obs: dict[str, np.ndarray] | None = None
        self._seq = np.zeros(self.num_envs, dtype=np.int64)
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._next_seq = 0
        self._episode_ids: dict[int, str] = {}
        self._pending: dict[str, np.ndarray] | None = None
        self._with_log_prob: bool | None = None
        self._info_fields: list[InfoField] | None = None

    # -- what the runner calls ---------------------------------------------------------------
    def start_episodes(self, raw_obs: Any) -> None:
        """Every env copy starts a new episode with ``raw_obs`` (after a full reset)."""
        self.end_fragment()
        self._write_pending()
        self._episode_ids.clear()  # every running episode was abandoned (written as a chunk)
        self._seq = np.arange(self._next_seq, self._next_seq + self.num_envs, dtype=np.int64)
        self._next_seq += self.num_envs
        self._t[:] = 0
        self._obs = flatten_structure(self.layout.observation_leaves, raw_obs)

    def record_step(
        self,
        env_actions: np.ndarray,
        policy_out: dict[str, Any],
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_raw_obs: Any,
        info: dict[str, Any],
    ) -> None:
        """One vector-env step; ``next_raw_obs`` holds reset observations where episodes ended."""
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        if self._with_log_prob is None:
            self._with_log_prob = ACTION_LOG_PROB in policy_out
            self._info_fields = self._discover_info(info)
        step: dict[str, np.ndarray] = {_SEQ: self._seq.copy(), T: self._t.copy()}
        for leaf in self.layout.observation_leaves:
            step[leaf.column] = self._obs[leaf.column]
        next_obs = flatten_structure(self.layout.observation_leaves, next_raw_obs)
        final_rows = np.flatnonzero(done)
        for leaf, next_leaf in zip(
            self.layout.observation_leaves, self.layout.next_observation_leaves, strict=True
        ):
            values = next_obs[leaf.column]
            if final_rows.size:
                values = np.array(values, copy=True)
                for i in final_rows:
                    values[i] = flatten_structure([leaf], info["final_obs"][i])[leaf.column]
            step[next_leaf.column] = values
        step.update(flatten_structure(self.layout.action_leaves, np.asarray(env_actions)))
        step[REWARD] = np.asarray(reward, dtype=np.float64)
        step[TERMINATED] = terminated
        step[TRUNCATED] = truncated
        if self._with_log_prob:
            step[ACTION_LOG_PROB] = np.asarray(policy_out[ACTION_LOG_PROB], dtype=np.float32).reshape(-1)
        for info_field in self._info_fields:
            step[info_field.leaf.column], step[info_field.leaf.column + _MASK] = self._info_values(
                info, info_field
            )
        self._steps.append(step)
        self._obs = next_obs
        self._t += 1
        if final_rows.size:
            self._t[final_rows] = 0
            self._seq[final_rows] = np.arange(self._next_seq, self._next_seq + final_rows.size)
            self._next_seq += final_rows.size

    def end_fragment(self) -> None:
        """Sort this fragment's rows into episodes; write the finished ones."""
        if not self._steps:
            return
        steps, self._steps = self._steps, []
        # [N, T] -> rows env-major, so each env copy's steps are contiguous and in time order.
        columns = {key: _stack_env_major([s[key] for s in steps]) for key in steps[0]}
        if self._pending is not None:
            columns = {key: np.concatenate([self._pending[key], columns[key]]) for key in columns}
            self._pending = None
        running = np.isin(columns[_SEQ], self._seq)
        order = np.lexsort((columns[T], columns[_SEQ]))
        finished = order[~running[order]]
        if finished.size:
            self._write({key: values[finished] for key, values in columns.items()})
        still_running = order[running[order]]
        if still_running.size:
            self._pending = {key: values[still_running] for key, values in columns.items()}
            if (
                sum(v.nbytes for v in self._pending.values()) >= self.config.row_group_bytes
                or still_running.size >= self.config.max_rows_per_file
            ):
                self._write_pending()

    def flush(self) -> str | None:
        """Write everything recorded so far, running episodes as chunks, and publish the file."""
        self.end_fragment()
        self._write_pending()
        return self.writer.flush() if self.writer is not None else None

    def close(self) -> None:
        self.flush()

    @property
    def buffered_rows(self) -> int:
        """Rows held in memory (steps of the current fragment excluded): the memory bound's measure."""
        pending = 0 if self._pending is None else len(self._pending[_SEQ])
        return pending + (self.writer.buffered_rows if self.writer is not None else 0)

    # -- internals ---------------------------------------------------------------------------
    def _write_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._write(pending)

    def _write(self, columns: dict[str, np.ndarray]) -> None:
        if self.writer is None:
            schema = self.layout.schema(
                with_log_prob=bool(self._with_log_prob),
                info_fields=self._info_fields or [],
                extra_metadata=self.metadata,
            )
            self.writer = ParquetFileWriter(self.directory, schema, self.config)
        seqs = columns[_SEQ]
        unique, inverse = np.unique(seqs, return_inverse=True)
        ids = np.array([self._episode_id(int(s)) for s in unique], dtype=object)
        arrays: dict[str, pa.Array] = {
            EPISODE_ID: pa.array(ids[inverse], type=pa.string()),
            T: pa.array(columns[T], type=pa.int64()),
        }
        for leaf in self.layout.observation_leaves + self.layout.action_leaves:
            arrays[leaf.column] = leaf.to_arrow(columns[leaf.column])
        arrays[REWARD] = pa.array(columns[REWARD], type=pa.float64())
        arrays[TERMINATED] = pa.array(columns[TERMINATED], type=pa.bool_())
        arrays[TRUNCATED] = pa.array(columns[TRUNCATED], type=pa.bool_())
        for leaf in self.layout.next_observation_leaves:
            arrays[leaf.column] = leaf.to_arrow(columns[leaf.column])
        if self._with_log_prob:
            arrays[ACTION_LOG_PROB] = pa.array(columns[ACTION_LOG_PROB], type=pa.float32())
        for info_field in self._info_fields or []:
            column = info_field.leaf.column
            arrays[column] = info_field.leaf.to_arrow(columns[column], mask=columns[column + _MASK])
        self.writer.write(pa.table(arrays, schema=self.writer.schema))
        # Ids of episodes that ended are not needed again.
        for seq in unique[~np.isin(unique, self._seq)]:
            self._episode_ids.pop(int(seq), None)

    def _episode_id(self, seq: int) -> str:
        episode_id = self._episode_ids.get(seq)
        if episode_id is None:
            episode_id = self._episode_ids[seq] = uuid.uuid4().hex
        return episode_id

    def _discover_info(self, info: dict[str, Any]) -> list[InfoField]:
        """Numeric info entries present at the first step become columns (others are not recorded)."""
        found = []
        for key, value in info.items():
            if key.startswith("_") or key in _SKIPPED_INFO or not isinstance(value, np.ndarray):
                continue
            if value.dtype.kind not in "biuf" or value.shape[:1] != (self.num_envs,):
                continue
            found.append(InfoField(str(key), tuple(value.shape[1:]), np.dtype(value.dtype)))
        return found

    def _info_values(self, info: dict[str, Any], info_field: InfoField) -> tuple[np.ndarray, np.ndarray]:
        """Values and validity of one info entry; an episode's last step reports in ``final_info``
        (same-step autoreset puts the next episode's reset info in the top level)."""
        shape = (self.num_envs, *info_field.shape)
        values = np.zeros(shape, dtype=info_field.dtype)
        valid = np.zeros(self.num_envs, dtype=bool)
        sources = [info]
        if isinstance(info.get("final_info"), dict):
            sources.append(info["final_info"])
        for source in sources:
            value = source.get(info_field.key)
            if not isinstance(value, np.ndarray) or value.shape != shape:
                continue
            mask = source.get("_" + info_field.key)
            rows = np.ones(self.num_envs, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
            values[rows] = value[rows]
            valid |= rows
        return values, valid


def _stack_env_major(per_step: list[np.ndarray]) -> np.ndarray:
    """``T`` arrays ``[N, ...]`` -> ``[N * T, ...]`` ordered by env copy, then time."""
    stacked = np.stack([np.asarray(x) for x in per_step], axis=1)
    return stacked.reshape(-1, *stacked.shape[2:])
