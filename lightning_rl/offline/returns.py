"""Discounted returns over the episode segments of offline data, with what bootstrapping needs.

A segment is a run of consecutive rows of one episode (same id, ``t`` counting up by one). It
ends where the episode terminated (no bootstrap), was truncated, or simply stops in this
piece of data (a chunk boundary, a Ray Data block boundary): there the value of the
segment's last ``next_observation`` stands in for the rest of the episode. So, for row ``i``
of a segment whose last row is ``e``,

    value_target_i = return_to_go_i + bootstrap_discount_i * V(next_observation_e)

with ``return_to_go_i = sum_{k=i..e} gamma^(k-i) r_k`` and ``bootstrap_discount_i =
gamma^(e-i+1)`` (0 if the episode terminated at ``e``): GAE with lambda = 1, which is what
RLlib's MARWIL computes, and valid wherever the data is cut.

torchrl's ``reward2go`` pads every segment to the longest one and truncates the discount
series at 1e-7; this exact version does one vectorised step per position-from-the-end
instead, so memory stays linear in the rows whatever the segment lengths.
"""

from __future__ import annotations

import numpy as np


def segment_starts(episode_ids: np.ndarray, t: np.ndarray) -> np.ndarray:
    """True where a row starts a new segment (row 0, another episode, or a gap in ``t``)."""
    n = len(t)
    starts = np.ones(n, dtype=bool)
    if n > 1:
        starts[1:] = (episode_ids[1:] != episode_ids[:-1]) | (t[1:] != t[:-1] + 1)
    return starts


def segment_returns(
    starts: np.ndarray, reward: np.ndarray, terminated: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(return_to_go, bootstrap_discount, bootstrap_index)`` per row (see the module docstring).

    ``bootstrap_index`` is the row whose ``next_observation`` a row bootstraps from (its
    segment's last row).
    """
    n = len(reward)
    if n == 0:
        empty = np.zeros(0)
        return empty, empty, np.zeros(0, dtype=np.int64)
    starts = np.asarray(starts, dtype=bool).copy()
    starts[0] = True
    reward = np.asarray(reward, dtype=np.float64)
    segment = np.cumsum(starts) - 1
    last_rows = np.flatnonzero(np.append(starts[1:], True))
    last = last_rows[segment]
    from_end = last - np.arange(n)
    order = np.argsort(from_end, kind="stable")
    bounds = np.cumsum(np.bincount(from_end))
    return_to_go = np.empty(n, dtype=np.float64)
    begin = 0
    for distance, stop in enumerate(bounds):
        rows = order[begin:stop]
        begin = stop
        if distance == 0:
            return_to_go[rows] = reward[rows]
        else:
            return_to_go[rows] = reward[rows] + gamma * return_to_go[rows + 1]
    not_terminated = ~np.asarray(terminated, dtype=bool)[last]
    bootstrap_discount = np.power(float(gamma), from_end + 1.0) * not_terminated
    return return_to_go, bootstrap_discount, last.astype(np.int64)
