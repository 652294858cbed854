"""Sum and min segment trees in NumPy, with the interface of torchrl's compiled ones.

torchrl's :class:`~torchrl.data.PrioritizedSampler` keeps priorities in C++ segment trees from
its ``_torchrl`` extension. The wheel of torchrl 0.14.1 installed next to torch 2.13 fails to
load that extension (``undefined symbol: ...torch8autograd13_wrap_outputs...``), which leaves
prioritized replay unusable. These trees implement the same four operations the sampler uses
(``__setitem__``, ``__getitem__``, ``query`` and ``scan_lower_bound``), vectorised over the
batch: one NumPy operation per tree level, ``O(batch * log capacity)`` work per call, so the
rest of torchrl's sampler (priority transform, max priority for new data, importance weights)
is used unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _indices(index: Any) -> np.ndarray:
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    return np.asarray(index, dtype=np.int64).reshape(-1)


class _SegmentTree:
    """A complete binary tree over ``capacity`` leaves; node ``i`` holds ``op`` of its children."""

    neutral: float = 0.0

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        size = 1
        while size < self.capacity:
            size *= 2
        self._size = size
        self._depth = size.bit_length() - 1
        self._tree = np.full(2 * size, self.neutral, dtype=np.float64)

    @staticmethod
    def _op(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.capacity

    def __setitem__(self, index: Any, value: Any) -> None:
        nodes = _indices(index) + self._size
        values = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        self._tree[nodes] = np.broadcast_to(np.asarray(values, dtype=np.float64).reshape(-1), nodes.shape)
        for _ in range(self._depth):
            nodes = nodes >> 1
            self._tree[nodes] = self._op(self._tree[2 * nodes], self._tree[2 * nodes + 1])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int | np.integer):
            return float(self._tree[int(index) + self._size])
        return torch.from_numpy(self._tree[_indices(index) + self._size].astype(np.float32))

    def leaves(self, length: int | None = None) -> np.ndarray:
        """A copy of the first ``length`` leaf values (float64; all leaves by default)."""
        end = self.capacity if length is None else int(length)
        return self._tree[self._size : self._size + end].copy()

    def query(self, start: int, end: int) -> float:
        """``op`` over the leaves ``[start, end)``."""
        start, end = int(start) + self._size, int(end) + self._size
        result = self.neutral
        while start < end:
            if start & 1:
                result = float(self._op(result, self._tree[start]))
                start += 1
            if end & 1:
                end -= 1
                result = float(self._op(result, self._tree[end]))
            start >>= 1
            end >>= 1
        return result


class SumSegmentTree(_SegmentTree):
    """Prefix sums in ``O(log n)``: what proportional (prioritized) sampling needs."""

    neutral = 0.0

    @staticmethod
    def _op(left, right):
        return np.add(left, right)

    def scan_lower_bound(self, mass: Any) -> torch.Tensor:
        """For each value ``m``, the leaf ``i`` with ``sum(leaves[:i]) <= m < sum(leaves[:i + 1])``.

        Leaves with zero priority are never returned for ``m`` below the total.
        """
        if isinstance(mass, torch.Tensor):
            mass = mass.detach().cpu().numpy()
        remaining = np.asarray(mass, dtype=np.float64).reshape(-1).copy()
        nodes = np.ones(remaining.shape, dtype=np.int64)
        tree = self._tree
        for _ in range(self._depth):
            left = 2 * nodes
            left_sum = tree[left]
            go_right = remaining >= left_sum
            remaining -= np.where(go_right, left_sum, 0.0)
            nodes = left + go_right
        return torch.from_numpy(np.minimum(nodes - self._size, self.capacity - 1))


class MinSegmentTree(_SegmentTree):
    """Running minimum: the smallest priority gives the largest importance weight."""

    neutral = float("inf")

    @staticmethod
    def _op(left, right):
        return np.minimum(left, right)
