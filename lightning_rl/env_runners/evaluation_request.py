"""How much one evaluation runs, and when it stops: RLlib's ``evaluation_duration`` (in
``"episodes"`` or ``"timesteps"``) bounded by ``evaluation_sample_timeout_s``.

The runner loops (single- and multi-agent) ask an :class:`EvaluationBudget` each step whether
to go on, so both stop the same way: when the quota is met, or when the time is up. A time-out
ends the call with the episodes finished so far and counts the running ones as cut, instead of
letting the group take a slow evaluation for a hung runner and replace it again and again
(an episode that never ends under a greedy policy made evaluation loop forever).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from lightning_rl.errors import ConfigError

EVALUATION_DURATION_UNITS = ("episodes", "timesteps")


@dataclass(frozen=True)
class EvaluationRequest:
    """``num`` episodes or env steps (``unit``), cut after ``timeout_s`` seconds (None: never)."""

    num: int
    unit: str = "episodes"
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.unit not in EVALUATION_DURATION_UNITS:
            choices = list(EVALUATION_DURATION_UNITS)
            raise ConfigError(f"evaluation_duration_unit must be one of {choices}, got {self.unit!r}.")

    @classmethod
    def of(cls, duration: int | EvaluationRequest) -> EvaluationRequest:
        """A request from a plain episode count (the older call form) or a request."""
        return duration if isinstance(duration, EvaluationRequest) else cls(int(duration))

    def split(self, num_runners: int) -> list[EvaluationRequest]:
        """The work of ``num_runners`` runners, as even as possible (empty shares left out)."""
        base, extra = divmod(self.num, num_runners)
        shares = [base + (1 if i < extra else 0) for i in range(num_runners)]
        return [replace(self, num=share) for share in shares if share > 0]


class EvaluationBudget:
    """One runner's progress through a request over ``num_envs`` env copies.

    ``"episodes"``: each copy runs a fixed quota (short episodes are not over-represented, as
    they would be if the first N to finish counted). ``"timesteps"``: every copy steps until
    the runner has taken ``num`` env steps; every episode finished by then counts.
    """

    def __init__(self, request: EvaluationRequest, num_envs: int) -> None:
        self.request = request
        self.start = time.perf_counter()
        if request.unit == "episodes":
            self.quota = np.full(num_envs, request.num // num_envs, dtype=np.int64)
            self.quota[: request.num % num_envs] += 1
        else:
            self.quota = np.full(num_envs, np.iinfo(np.int64).max // 2, dtype=np.int64)
        self.num_env_steps = 0
        self.timed_out = False
        self.num_episodes_cut = 0

    def step(self) -> None:
        """One vector step taken: count the env steps of copies still evaluating."""
        self.num_env_steps += int((self.quota > 0).sum())

    def counts(self, env_index: int) -> bool:
        """Whether an episode that just ended in copy ``env_index`` counts (and take it off)."""
        if self.quota[env_index] <= 0:
            return False
        self.quota[env_index] -= 1
        return True

    def finished(self, env_ids: np.ndarray | int) -> np.ndarray | np.bool_:
        """Per copy in ``env_ids`` (or for the one copy given): whether it has no episode left
        to count (never, for ``"timesteps"``: every copy steps until the runner's total is reached)."""
        return self.quota[env_ids] <= 0

    def keep_going(self) -> bool:
        """False once the quota is met, or the time is up (then the running episodes are cut)."""
        if self.request.unit == "timesteps" and self.num_env_steps >= self.request.num:
            return False
        if not (self.quota > 0).any():
            return False
        timeout = self.request.timeout_s
        if timeout is not None and time.perf_counter() - self.start > timeout:
            self.timed_out = True
            self.num_episodes_cut = int((self.quota > 0).sum())
            return False
        return True
