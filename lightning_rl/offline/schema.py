"""The Parquet layout of recorded episodes: one row per env step, one column per leaf of a space.

Every recorded file holds rows of env-side data (raw observations before any connector, the
actions the env received), so an offline algorithm runs the same env-to-module connectors as
online training. Columns (documented for users in ``docs/offline_data_schema.md``):

* ``episode_id`` (string), ``t`` (int64): the episode (unique across runners and restarts) and
  the step index within it; rows of one episode are contiguous and in time order, except that
  a very long episode, or one still running when the recorder flushes, continues in a later
  chunk (same id, ``t`` continuing).
* ``observation`` / ``next_observation``: the observation before and after the step (for the
  last step of an episode, the true final observation). One column per leaf of the space:
  Dict keys become ``observation.<key>``, Tuple positions ``observation.<i>`` (recursively).
* ``action`` (leaf columns like the observation), ``reward`` (float64), ``terminated``,
  ``truncated`` (bool), optional ``action_log_prob`` (float32, the behaviour policy's
  log-probability of the action it sampled), optional ``info.<key>`` (numeric info entries;
  null where the env did not report them).

A leaf is a scalar column for a 0-d space (``Discrete``, ``Box(shape=())``), else a
``fixed_size_list`` of the flattened values with the original shape in the field metadata.
The file metadata (key ``lightning_rl``) holds the format version and both spaces as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.offline.arrow import pa
from lightning_rl.serialization import NotPlainDataError, space_from_data, space_to_data

FORMAT_NAME = "lightning_rl.episodes"
FORMAT_VERSION = 1
METADATA_KEY = b"lightning_rl"
SHAPE_KEY = b"shape"

EPISODE_ID = "episode_id"
T = "t"
OBSERVATION = "observation"
NEXT_OBSERVATION = "next_observation"
ACTION = "action"
REWARD = "reward"
TERMINATED = "terminated"
TRUNCATED = "truncated"
ACTION_LOG_PROB = "action_log_prob"
INFO_PREFIX = "info."


class OfflineDataError(ConfigError):
    """Offline data that cannot be used: missing, partial, empty, or not matching the env's spaces."""


@dataclass(frozen=True)
class Leaf:
    """One column of a (possibly nested) space: where it sits in the structure and what it holds."""

    column: str
    path: tuple[str | int, ...]
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def arrow_type(self) -> pa.DataType:
        value_type = pa.from_numpy_dtype(self.dtype)
        return value_type if not self.shape else pa.list_(value_type, self.size)

    def field(self, nullable: bool = False) -> pa.Field:
        metadata = {SHAPE_KEY: json.dumps(list(self.shape)).encode()} if self.shape else None
        return pa.field(self.column, self.arrow_type(), nullable=nullable, metadata=metadata)

    def to_arrow(self, values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
        """``[B, *shape]`` values -> one arrow array (``mask``: True where the row is valid)."""
        values = np.ascontiguousarray(np.asarray(values, dtype=self.dtype))
        if values.shape[1:] != self.shape:
            raise SpaceError(
                f"Column {self.column!r} expects rows of shape {self.shape}, got {values.shape[1:]}."
            )
        nulls = None if mask is None else ~np.asarray(mask, dtype=bool)
        if not self.shape:
            return pa.array(values, type=self.arrow_type(), mask=nulls)
        flat = pa.array(values.reshape(-1), type=pa.from_numpy_dtype(self.dtype))
        array = pa.FixedSizeListArray.from_arrays(flat, self.size)
        if nulls is not None and nulls.any():
            array = pa.FixedSizeListArray.from_arrays(flat, self.size, mask=pa.array(nulls))
        return array

    def from_arrow(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """One arrow column -> ``[B, *shape]`` numpy array of this leaf's dtype (nulls as NaN/0)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if self.shape:
            values = column.flatten()  # respects slicing offsets, unlike .values
            array = values.to_numpy(zero_copy_only=False).reshape(len(column), *self.shape)
        else:
            if column.null_count:
                fill = np.nan if np.issubdtype(self.dtype, np.floating) else 0
                column = column.fill_null(fill)
            array = column.to_numpy(zero_copy_only=False)
        # Zero-copy where the dtype allows: the array may be a read-only view of Arrow's buffer.
        return array.astype(self.dtype, copy=False)


def space_leaves(space: gym.Space, column: str) -> list[Leaf]:
    """The leaf columns of ``space`` under the name ``column`` (see the module docstring)."""

    def walk(s: gym.Space, name: str, path: tuple) -> Iterable[Leaf]:
        if isinstance(s, spaces.Dict):
            for key, sub in s.spaces.items():
                yield from walk(sub, f"{name}.{key}", (*path, str(key)))
        elif isinstance(s, spaces.Tuple):
            for i, sub in enumerate(s.spaces):
                yield from walk(sub, f"{name}.{i}", (*path, i))
        elif isinstance(s, spaces.Box):
            yield Leaf(name, path, tuple(int(d) for d in s.shape), np.dtype(s.dtype))
        elif isinstance(s, spaces.Discrete):
            yield Leaf(name, path, (), np.dtype(np.int64))
        elif isinstance(s, spaces.MultiDiscrete):
            yield Leaf(name, path, tuple(int(d) for d in np.shape(s.nvec)), np.dtype(np.int64))
        elif isinstance(s, spaces.MultiBinary):
            yield Leaf(name, path, tuple(int(d) for d in np.atleast_1d(s.n)), np.dtype(np.int8))
        else:
            raise SpaceError(
                f"Recording/reading {name!r} of space {s} is not supported: use Box, Discrete, "
                "MultiDiscrete, MultiBinary, or Dict/Tuple of those."
            )

    return list(walk(space, column, ()))


def flatten_structure(leaves: list[Leaf], value: Any) -> dict[str, Any]:
    """A (nested dict/tuple) observation batch -> ``{column: leaf array}``."""
    out = {}
    for leaf in leaves:
        node = value
        for key in leaf.path:
            node = node[key]
        out[leaf.column] = node
    return out


def assemble_structure(space: gym.Space, column: str, get: Callable[[str], Any]) -> Any:
    """Inverse of :func:`flatten_structure`: rebuild dicts/tuples with ``get(column)`` at the leaves."""
    if isinstance(space, spaces.Dict):
        return {key: assemble_structure(sub, f"{column}.{key}", get) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(assemble_structure(sub, f"{column}.{i}", get) for i, sub in enumerate(space.spaces))
    return get(column)


@dataclass(frozen=True)
class InfoField:
    """A recorded ``info`` entry: numeric values of a fixed shape per env step."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def leaf(self) -> Leaf:
        return Leaf(INFO_PREFIX + self.key, (), self.shape, self.dtype)


class EpisodeLayout:
    """The columns of recorded episodes for one pair of env spaces."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.observation_leaves = space_leaves(observation_space, OBSERVATION)
        self.next_observation_leaves = space_leaves(observation_space, NEXT_OBSERVATION)
        self.action_leaves = space_leaves(action_space, ACTION)

    def schema(
        self,
        *,
        with_log_prob: bool,
        info_fields: Iterable[InfoField] = (),
        extra_metadata: Mapping[str, Any] | None = None,
    ) -> pa.Schema:
        fields = [pa.field(EPISODE_ID, pa.string(), nullable=False), pa.field(T, pa.int64(), nullable=False)]
        fields += [leaf.field() for leaf in self.observation_leaves]
        fields += [leaf.field() for leaf in self.action_leaves]
        fields += [
            pa.field(REWARD, pa.float64(), nullable=False),
            pa.field(TERMINATED, pa.bool_(), nullable=False),
            pa.field(TRUNCATED, pa.bool_(), nullable=False),
        ]
        fields += [leaf.field() for leaf in self.next_observation_leaves]
        if with_log_prob:
            fields.append(pa.field(ACTION_LOG_PROB, pa.float32(), nullable=False))
        fields += [info.leaf.field(nullable=True) for info in info_fields]
        return pa.schema(fields, metadata={METADATA_KEY: json.dumps(self.metadata(extra_metadata)).encode()})

    def metadata(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        try:
            spaces_data = {
                "observation_space": space_to_data(self.observation_space),
                "action_space": space_to_data(self.action_space),
            }
        except NotPlainDataError as exc:
            raise SpaceError(f"Cannot record episodes of this env: {exc}") from exc
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **spaces_data, **dict(extra or {})}


def file_metadata(schema: pa.Schema) -> dict[str, Any] | None:
    """The ``lightning_rl`` metadata of a file's schema (None for files written by other tools)."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def check_schema(schema: pa.Schema, layout: EpisodeLayout, columns: Iterable[str], source: str) -> None:
    """One clear :class:`OfflineDataError` naming ``source`` if ``schema`` cannot feed ``columns``.

    Checks the recorded spaces (when the file says which) against the env's, then every
    needed column's presence and type (a leaf's flattened size must match its shape).
    """
    metadata = file_metadata(schema)
    if metadata is not None:
        version = metadata.get("format_version")
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise OfflineDataError(
                f"Offline data file {source} has episode format {version}, but this lightning-rl reads "
                f"formats up to {FORMAT_VERSION}; upgrade lightning-rl."
            )
        for name, expected in (
            ("observation_space", layout.observation_space),
            ("action_space", layout.action_space),
        ):
            recorded = metadata.get(name)
            if recorded is not None and not _same_space(recorded, expected):
                raise OfflineDataError(
                    f"Offline data file {source} was recorded with {name} {_space_text(recorded)}, but the "
                    f"env has {expected}."
                )
    leaves = {
        leaf.column: leaf
        for leaf in layout.observation_leaves + layout.next_observation_leaves + layout.action_leaves
    }
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise OfflineDataError(
            f"Offline data file {source} lacks column(s) {missing}; it has {schema.names}. Episode files "
            "need the columns of docs/offline_data_schema.md."
        )
    for column in columns:
        field = schema.field(column)
        leaf = leaves.get(column)
        if leaf is not None:
            _check_leaf_type(field, leaf, source)
        elif column in (REWARD, ACTION_LOG_PROB, T) and not (
            pa.types.is_floating(field.type) or pa.types.is_integer(field.type)
        ):
            raise OfflineDataError(
                f"Offline data file {source}: column {column!r} must be numeric, got {field.type}."
            )
        elif column in (TERMINATED, TRUNCATED) and not pa.types.is_boolean(field.type):
            raise OfflineDataError(
                f"Offline data file {source}: column {column!r} must be bool, got {field.type}."
            )


def _check_leaf_type(field: pa.Field, leaf: Leaf, source: str) -> None:
    kind = field.type
    expected = f"{leaf.arrow_type()} (shape {leaf.shape})"
    if not leaf.shape:
        ok = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        if not ok:
            raise OfflineDataError(
                f"Offline data file {source}: column {leaf.column!r} holds {kind}, but the env's space needs "
                f"{expected}."
            )
        return
    if not pa.types.is_fixed_size_list(kind) or kind.list_size != leaf.size:
        recorded_shape = (field.metadata or {}).get(SHAPE_KEY)
        shape_text = f" of shape {json.loads(recorded_shape)}" if recorded_shape else ""
        raise OfflineDataError(
            f"Offline data file {source}: column {leaf.column!r} holds {kind}{shape_text}, but the env's "
            f"space needs {expected}."
        )
    recorded_shape = (field.metadata or {}).get(SHAPE_KEY)
    if recorded_shape is not None and tuple(json.loads(recorded_shape)) != leaf.shape:
        recorded = tuple(json.loads(recorded_shape))
        raise OfflineDataError(
            f"Offline data file {source}: column {leaf.column!r} has shape {recorded}, but the env's space "
            f"needs shape {leaf.shape}."
        )


def _same_space(recorded: Any, expected: gym.Space) -> bool:
    try:
        space = space_from_data(recorded)
    except (NotPlainDataError, KeyError, TypeError, ValueError):
        return False
    return _spaces_match(space, expected)


def _spaces_match(a: gym.Space, b: gym.Space) -> bool:
    """Equal structure, shapes and dtypes (bounds may differ: they do not change the columns)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, spaces.Dict):
        return list(a.spaces) == list(b.spaces) and all(_spaces_match(a[k], b[k]) for k in a.spaces)
    if isinstance(a, spaces.Tuple):
        return len(a.spaces) == len(b.spaces) and all(
            _spaces_match(x, y) for x, y in zip(a.spaces, b.spaces, strict=True)
        )
    if isinstance(a, spaces.Discrete):
        return int(a.n) == int(b.n) and int(a.start) == int(b.start)
    return a.shape == b.shape and np.dtype(a.dtype) == np.dtype(b.dtype)


def _space_text(data: Any) -> str:
    try:
        return str(space_from_data(data))
    except (NotPlainDataError, KeyError, TypeError, ValueError):
        return repr(data)
