"""Small helpers for observations that are arrays, dicts or tuples of arrays (gymnasium spaces)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def map_structure(fn: Callable[[Any], Any], tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: map_structure(fn, v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(map_structure(fn, v) for v in tree)
    return fn(tree)


def to_torch(tree: Any) -> Any:
    """numpy (possibly nested) -> torch without copying where the dtype allows it."""

    def convert(x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x
        array = np.asarray(x)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype == object:
            raise TypeError(f"Cannot turn an object array into a tensor: {array!r}")
        if not array.flags.writeable:
            array = array.copy()
        return torch.from_numpy(array)

    return map_structure(convert, tree)


def _stack_leaves(items: Sequence[Any], stack_leaves: Callable[[list[Any]], Any]) -> Any:
    first = items[0]
    if isinstance(first, dict):
        return {k: _stack_leaves([item[k] for item in items], stack_leaves) for k in first}
    if isinstance(first, tuple):
        return tuple(_stack_leaves([item[i] for item in items], stack_leaves) for i in range(len(first)))
    return stack_leaves(list(items))


def stack_structures(items: Sequence[Any]) -> Any:
    """Stack a list of per-env observations (arrays, dicts or tuples) into one numpy batch."""
    return _stack_leaves(items, lambda leaves: np.stack([np.asarray(leaf) for leaf in leaves]))


def stack_tensor_structures(items: Sequence[Any]) -> Any:
    """Stack a list of tensor observations (tensors, dicts or tuples of them) into one batch."""
    return _stack_leaves(items, torch.stack)


def batch_size_of(tree: Any) -> int:
    if isinstance(tree, dict):
        return batch_size_of(next(iter(tree.values())))
    if isinstance(tree, tuple):
        return batch_size_of(tree[0])
    return len(tree)


def tree_row(raw: Any, i: int) -> Any:
    """Row ``i`` of a batched tree (an env copy's entry of a dict/tuple observation batch)."""
    if isinstance(raw, dict):
        return {k: tree_row(v, i) for k, v in raw.items()}
    if isinstance(raw, tuple):
        return tuple(tree_row(v, i) for v in raw)
    return raw[i]
