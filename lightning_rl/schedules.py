"""Piecewise-linear schedules over env steps, in RLlib's ``[[step, value], ...]`` format."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from lightning_rl.errors import ConfigError


class PiecewiseSchedule:
    """Linear interpolation between ``(env_step, value)`` points; constant outside them.

    ``PiecewiseSchedule([[0, 1e-3], [100_000, 1e-4]])`` decays a learning rate linearly over
    the first 100k env steps sampled, then holds it.
    """

    def __init__(self, points: Sequence[Sequence[float]]) -> None:
        if not points:
            raise ConfigError("A schedule needs at least one [env_step, value] point.")
        try:
            pairs = [(float(step), float(value)) for step, value in points]
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"A schedule must be a list of [env_step, value] pairs, got {points!r}"
            ) from exc
        steps = [step for step, _ in pairs]
        if steps != sorted(steps):
            raise ConfigError(f"Schedule steps must increase, got {steps}")
        self.points = pairs

    def __call__(self, env_step: float) -> float:
        points = self.points
        if env_step <= points[0][0]:
            return points[0][1]
        for (s0, v0), (s1, v1) in itertools.pairwise(points):
            if env_step <= s1:
                return v0 + (v1 - v0) * (env_step - s0) / (s1 - s0) if s1 > s0 else v1
        return points[-1][1]


def check_non_negative_schedule(name: str, points: Sequence[Sequence[float]] | None, what: str = "") -> None:
    """One ``ConfigError`` naming the setting and its first negative (or NaN) value; None passes."""
    if not points:
        return
    bad = [value for _, value in PiecewiseSchedule(points).points if not value >= 0.0]
    if bad:
        raise ConfigError(f"{name} values must be >= 0{what}, got {bad[0]!r} in {points!r}.")


def schedule_or_constant(schedule: Sequence[Sequence[float]] | None, constant: float) -> PiecewiseSchedule:
    return PiecewiseSchedule(schedule) if schedule else PiecewiseSchedule([[0, constant]])
