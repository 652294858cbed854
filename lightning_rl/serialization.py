"""Gymnasium spaces and policy recipes as plain data: dicts, lists, strings and numbers.

Checkpoints must open with ``torch.load(weights_only=True)`` and exported policies carry their
spaces as JSON metadata, so neither may pickle gymnasium objects: a pickled space breaks as
soon as gymnasium renames a private attribute, and loading it means trusting arbitrary code.
The encoding is JSON-compatible (non-finite bounds are written as the strings ``"inf"``,
``"-inf"``, ``"nan"``) and bounds that are the same everywhere are stored once.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["NotPlainDataError", "from_plain", "space_from_data", "space_to_data", "to_plain"]

_SPACE_TAG = "__space__"
_FLOAT_TAG = "__float__"  # a non-finite float outside space bounds, so strings stay strings


class NotPlainDataError(TypeError):
    """A value has no plain-data form (an arbitrary object, an unsupported space type)."""


def _number(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _array_to_data(array: np.ndarray) -> Any:
    """One number when every element is equal (the usual Box bound), else a nested list."""
    array = np.asarray(array)
    flat = array.reshape(-1)
    if flat.size and np.all((flat == flat[0]) | (np.isnan(flat) & np.isnan(flat[0]))):
        return _number(flat[0])
    return np.vectorize(_number, otypes=[object])(array).tolist() if array.size else []


def _array_from_data(data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    work_dtype = np.float64 if np.issubdtype(dtype, np.floating) else dtype
    array = np.array(data, dtype=work_dtype)
    if array.ndim == 0:
        array = np.full(shape, array, dtype=work_dtype)
    return array.astype(dtype)


def space_to_data(space: gym.Space) -> dict[str, Any]:
    """A JSON-compatible description of ``space`` that :func:`space_from_data` turns back into it."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
            "low": _array_to_data(space.low),
            "high": _array_to_data(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": np.asarray(space.nvec).tolist(),
            "start": np.asarray(space.start).tolist(),
            "dtype": np.dtype(space.dtype).name,
        }
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": int(n) if np.isscalar(n) else np.asarray(n).tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {str(k): space_to_data(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_data(s) for s in space.spaces]}
    raise NotPlainDataError(
        f"Space {space} has no plain-data form; supported are Box, Discrete, MultiDiscrete, MultiBinary, "
        "Dict and Tuple."
    )


def space_from_data(data: dict[str, Any]) -> gym.Space:
    """Rebuild a space written by :func:`space_to_data`."""
    kind = data.get("type")
    if kind == "Box":
        shape = tuple(int(s) for s in data["shape"])
        dtype = np.dtype(data["dtype"])
        low = _array_from_data(data["low"], shape, dtype)
        high = _array_from_data(data["high"], shape, dtype)
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(
            np.asarray(data["nvec"]),
            dtype=np.dtype(data.get("dtype", "int64")),
            start=None if data.get("start") is None else np.asarray(data["start"]),  # None: zeros
        )
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return spaces.Dict({k: space_from_data(v) for k, v in data["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([space_from_data(v) for v in data["spaces"]])
    raise NotPlainDataError(f"Unknown space description {data!r}.")


def to_plain(value: Any) -> Any:
    """Nested dicts/lists/tuples of numbers, strings and spaces -> plain data (spaces tagged)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, float | np.generic):
        number = _number(value)
        return {_FLOAT_TAG: number} if isinstance(number, str) else number
    if isinstance(value, gym.Space):
        return {_SPACE_TAG: space_to_data(value)}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise NotPlainDataError(f"Only string keys have a plain-data form, got {list(value)!r}.")
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    raise NotPlainDataError(f"{type(value).__name__} value {value!r} has no plain-data form.")


def from_plain(value: Any) -> Any:
    """Inverse of :func:`to_plain` (lists stay lists, tagged spaces become spaces again)."""
    if isinstance(value, dict):
        if set(value) == {_SPACE_TAG}:
            return space_from_data(value[_SPACE_TAG])
        if set(value) == {_FLOAT_TAG}:
            return float(value[_FLOAT_TAG])
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value
