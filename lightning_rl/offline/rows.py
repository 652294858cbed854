"""Offline rows (Parquet tables, TensorDicts, replay buffers) -> one flat TensorDict layout.

Whatever the source, the DataModule minibatches from a TensorDict ``[n]`` of *env-side*
observations (one key per leaf column, as in the files), *module-side* actions (recorded env
actions mapped back through the module-to-env connectors), ``("next", "reward" |
"terminated" | "truncated" | "done")`` shaped ``[n, 1]``, and, when the algorithm asks for
them, next observations and the return/bootstrap columns of :mod:`~lightning_rl.offline.returns`.
The env-to-module connectors run later, per minibatch, exactly as in the EnvRunners.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from lightning_rl.offline.actions import env_to_module_actions
from lightning_rl.offline.arrow import pa
from lightning_rl.offline.returns import segment_returns, segment_starts
from lightning_rl.offline.schema import (
    ACTION,
    EPISODE_ID,
    NEXT_OBSERVATION,
    OBSERVATION,
    REWARD,
    TERMINATED,
    TRUNCATED,
    EpisodeLayout,
    OfflineDataError,
    T,
    space_leaves,
)

RETURN_TO_GO = "return_to_go"
BOOTSTRAP_DISCOUNT = "bootstrap_discount"
BOOTSTRAP_OBSERVATION = "bootstrap_observation"


@dataclass(frozen=True)
class OfflineRequirements:
    """Which columns an offline algorithm learns from beyond observation and action.

    Args:
        next_observation: ``("next", "observation")`` (Q-learning: CQL).
        returns: ``return_to_go``, ``bootstrap_discount``, ``bootstrap_observation`` (MARWIL).
        gamma: discount of the returns.
    """

    next_observation: bool = False
    returns: bool = False
    gamma: float = 0.99


class RowConverter:
    """Builds the flat raw TensorDict (see the module docstring) for one algorithm's needs."""

    def __init__(
        self,
        layout: EpisodeLayout,
        module_to_env: list[dict[str, Any]],
        requirements: OfflineRequirements,
    ) -> None:
        self.layout = layout
        self.module_to_env = module_to_env
        self.requirements = requirements
        self.bootstrap_leaves = space_leaves(layout.observation_space, BOOTSTRAP_OBSERVATION)

    def columns(self) -> list[str]:
        """The file columns to read (nothing else is loaded)."""
        needs = self.requirements
        columns = [leaf.column for leaf in self.layout.observation_leaves + self.layout.action_leaves]
        columns += [REWARD, TERMINATED, TRUNCATED]
        if needs.next_observation or needs.returns:
            columns += [leaf.column for leaf in self.layout.next_observation_leaves]
        if needs.returns:
            columns += [EPISODE_ID, T]
        return columns

    # -- Parquet -----------------------------------------------------------------------------
    def from_table(self, table: pa.Table) -> TensorDict:
        n = table.num_rows
        arrays = {
            leaf.column: leaf.from_arrow(table.column(leaf.column))
            for leaf in self.layout.observation_leaves + self.layout.action_leaves
        }
        next_obs = {}
        if self.requirements.next_observation or self.requirements.returns:
            next_obs = {
                leaf.column: leaf.from_arrow(table.column(leaf.column))
                for leaf in self.layout.next_observation_leaves
            }
        returns = None
        if self.requirements.returns:
            if RETURN_TO_GO not in table.column_names:
                table = add_return_columns(table, self.layout, self.requirements.gamma)
            returns = (
                table.column(RETURN_TO_GO).to_numpy(zero_copy_only=False),
                table.column(BOOTSTRAP_DISCOUNT).to_numpy(zero_copy_only=False),
                {leaf.column: leaf.from_arrow(table.column(leaf.column)) for leaf in self.bootstrap_leaves},
            )
        return self._build(
            n,
            observations={leaf.column: arrays[leaf.column] for leaf in self.layout.observation_leaves},
            actions=_assemble_action(self.layout, arrays),
            reward=table.column(REWARD).to_numpy(zero_copy_only=False),
            terminated=table.column(TERMINATED).to_numpy(zero_copy_only=False),
            truncated=table.column(TRUNCATED).to_numpy(zero_copy_only=False),
            next_observations=next_obs,
            returns=returns,
        )

    # -- TensorDicts and replay buffers ------------------------------------------------------
    def from_tensordicts(self, data: Sequence[TensorDictBase]) -> TensorDict:
        """In-memory data in torchrl's layout with env-side values (``[B]`` or ``[N, T]`` each)."""
        parts = [self._from_tensordict(td, index) for index, td in enumerate(data)]
        if not parts:
            raise OfflineDataError("The offline input is an empty list of TensorDicts (an empty data set).")
        merged = torch.cat(parts) if len(parts) > 1 else parts[0]
        if merged.batch_size[0] == 0:
            raise OfflineDataError("The offline input TensorDicts hold no rows (an empty data set).")
        return merged

    def _from_tensordict(self, td: TensorDictBase, index: int) -> TensorDict:
        source = f"input TensorDict #{index}"
        if td.batch_dims == 0:
            raise OfflineDataError(f"The offline {source} has no batch dimension.")
        row_length = td.batch_size[-1]
        flat = td.reshape(-1)
        n = flat.batch_size[0]
        for key in (OBSERVATION, ACTION, ("next", REWARD)):
            if key not in flat.keys(include_nested=True):
                raise OfflineDataError(
                    f"The offline {source} lacks key {key!r}; it has "
                    f"{sorted(map(str, flat.keys(True, True)))}."
                )
        observations = self._leaves_from(
            flat[OBSERVATION], self.layout.observation_leaves, OBSERVATION, source
        )
        next_obs = {}
        if self.requirements.next_observation or self.requirements.returns:
            if ("next", OBSERVATION) not in flat.keys(include_nested=True):
                raise OfflineDataError(
                    f"The offline {source} lacks ('next', 'observation'), which this algorithm needs."
                )
            next_obs = self._leaves_from(
                flat["next", OBSERVATION], self.layout.next_observation_leaves, OBSERVATION, source
            )
        terminated = _flag(flat, "terminated", n)
        truncated = _flag(flat, "truncated", n)
        starts = None
        if self.requirements.returns:
            if EPISODE_ID in flat and T in flat:
                starts = segment_starts(flat[EPISODE_ID].numpy(), flat[T].numpy())
            else:
                # Rows of each env copy in time order: a segment ends at done and at a row's end.
                starts = np.zeros(n, dtype=bool)
                starts[::row_length] = True
                done = terminated | truncated
                starts[1:] |= done[:-1]
        reward = flat["next", REWARD].reshape(n).numpy()
        returns = None
        if starts is not None:
            return_to_go, discount, last = segment_returns(
                starts, reward, terminated, self.requirements.gamma
            )
            bootstrap = {
                boot.column: next_obs[leaf.column][last]
                for leaf, boot in zip(self.layout.next_observation_leaves, self.bootstrap_leaves, strict=True)
            }
            returns = (return_to_go, discount, bootstrap)
        return self._build(
            n,
            observations=observations,
            actions=flat[ACTION].numpy(),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            next_observations=next_obs,
            returns=returns,
        )

    def _leaves_from(self, node: Any, leaves: list, root: str, source: str) -> dict[str, np.ndarray]:
        out = {}
        for leaf in leaves:
            value = node
            for key in leaf.path:
                value = value[str(key)] if isinstance(value, TensorDictBase) else value[key]
            array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if tuple(array.shape[1:]) != leaf.shape:
                raise OfflineDataError(
                    f"The offline {source}: {root}{''.join(f'.{k}' for k in leaf.path)} has rows of shape "
                    f"{tuple(array.shape[1:])}, but the env's space needs {leaf.shape}."
                )
            out[leaf.column] = array.astype(leaf.dtype, copy=False)
        return out

    # -- common ------------------------------------------------------------------------------
    def _build(
        self,
        n: int,
        *,
        observations: dict[str, np.ndarray],
        actions: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_observations: dict[str, np.ndarray],
        returns: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None,
    ) -> TensorDict:
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        data: dict[str, Any] = {column: _tensor(v) for column, v in observations.items()}
        data[ACTION] = env_to_module_actions(actions, self.layout.action_space, self.module_to_env)
        data["next"] = {
            REWARD: _tensor(np.asarray(reward, dtype=np.float32)).reshape(n, 1),
            "terminated": torch.from_numpy(terminated).reshape(n, 1),
            "truncated": torch.from_numpy(truncated).reshape(n, 1),
            "done": torch.from_numpy(terminated | truncated).reshape(n, 1),
        }
        if self.requirements.next_observation:
            for leaf in self.layout.next_observation_leaves:
                data[leaf.column] = _tensor(next_observations[leaf.column])
        if returns is not None:
            return_to_go, discount, bootstrap = returns
            data[RETURN_TO_GO] = _tensor(np.asarray(return_to_go, dtype=np.float32))
            data[BOOTSTRAP_DISCOUNT] = _tensor(np.asarray(discount, dtype=np.float32))
            for column, values in bootstrap.items():
                data[column] = _tensor(values)
        return TensorDict(data, batch_size=[n])


def add_return_columns(table: pa.Table, layout: EpisodeLayout, gamma: float) -> pa.Table:
    """Add ``return_to_go``, ``bootstrap_discount`` and ``bootstrap_observation*`` to rows in file
    order (before any shuffle), dropping ``episode_id`` and ``t``; runs on Ray Data blocks too,
    where a block boundary is just one more segment end to bootstrap from."""
    n = table.num_rows
    t = table.column(T).to_numpy()
    starts = np.ones(n, dtype=bool)
    if n > 1:
        ids = table.column(EPISODE_ID)
        import pyarrow.compute as pc  # ~0.2 s to import: only when returns are computed

        changed = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        starts[1:] = changed | (t[1:] != t[:-1] + 1)
    reward = table.column(REWARD).to_numpy(zero_copy_only=False)
    terminated = table.column(TERMINATED).to_numpy(zero_copy_only=False)
    return_to_go, discount, last = segment_returns(starts, reward, terminated, gamma)
    table = table.drop_columns([EPISODE_ID, T])
    table = table.append_column(RETURN_TO_GO, pa.array(return_to_go.astype(np.float32)))
    table = table.append_column(BOOTSTRAP_DISCOUNT, pa.array(discount.astype(np.float32)))
    take = pa.array(last)
    for leaf in layout.next_observation_leaves:
        column = BOOTSTRAP_OBSERVATION + leaf.column[len(NEXT_OBSERVATION) :]
        table = table.append_column(column, table.column(leaf.column).take(take))
    return table


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over ``array`` without copying, even where it is a read-only view of an Arrow
    buffer: the rows are never written to, and a copy would double a loaded data set's memory."""
    array = np.ascontiguousarray(array)
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(array)


def _assemble_action(layout: EpisodeLayout, arrays: dict[str, np.ndarray]) -> np.ndarray:
    (leaf,) = layout.action_leaves  # Discrete or 1-D Box: the action spaces policies support
    return arrays[leaf.column]


def _flag(td: TensorDictBase, name: str, n: int) -> np.ndarray:
    key = ("next", name)
    if key in td.keys(include_nested=True):
        return td[key].reshape(n).numpy().astype(bool)
    return np.zeros(n, dtype=bool)


def replay_buffer_rows(buffer: Any) -> TensorDictBase:
    """A torchrl replay buffer's stored transitions, in storage order."""
    size = len(buffer)
    if size == 0:
        raise OfflineDataError("The offline input replay buffer is empty (an empty data set).")
    return buffer.storage.get(torch.arange(size))


def check_action_space(action_space: gym.Space) -> None:
    """Offline algorithms learn Discrete or 1-D Box actions (one action column)."""
    if not (
        isinstance(action_space, gym.spaces.Discrete)
        or (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)
    ):
        raise OfflineDataError(
            f"Offline training supports Discrete and 1-D Box action spaces, got {action_space}."
        )


__all__ = [
    "BOOTSTRAP_DISCOUNT",
    "add_return_columns",
    "BOOTSTRAP_OBSERVATION",
    "NEXT_OBSERVATION",
    "RETURN_TO_GO",
    "OfflineRequirements",
    "RowConverter",
    "check_action_space",
    "replay_buffer_rows",
]
