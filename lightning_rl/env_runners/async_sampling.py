"""Continuous sampling on an :class:`EnvRunnerGroup`: runners never wait for the learner.

Every healthy runner always has up to ``max_requests_in_flight_per_env_runner`` ``sample``
calls queued, so it starts its next fragment the moment it finished one, with whatever weights
it has. The learner takes whichever fragments are ready (``ray.wait``) and hands new weights to
:meth:`AsyncSampler.broadcast` (inside the calls when small, else one ``ray.put``:
:func:`~lightning_rl.env_runners.env_runner_group.state_argument`); each runner receives them
with its next call, and only when its version is behind (the weights are not re-sent with
every call).

Fault tolerance stays the group's: a call that raises, or that is the head of its runner's
queue for longer than the hung timeout (``env_runner_hung_timeout_s``, 3 x ``sample_timeout_s``
by default), is reported with :meth:`EnvRunnerGroup.record_failure`, which probes an
unavailable runner, else drops it and starts a replacement in the background; a call that took
longer than ``sample_timeout_s`` but finished is a slow runner's late result: dropped, counted,
and the runner keeps sampling. The sampler keeps serving the other runners' fragments and gives
the replacement work as soon as :meth:`EnvRunnerGroup.poll_replacements` has put it into service. So a killed
runner never stalls the learner while another runner is alive.

With ``num_env_runners=0`` the group's in-process runner samples synchronously, one fragment
per :meth:`AsyncSampler.get` (tests and small runs need no Ray).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lightning_rl.env_runners.env_runner import RunnerResult
from lightning_rl.env_runners.env_runner_group import (
    EnvRunnerFailure,
    EnvRunnerGroup,
    state_argument,
    torch_result,
)
from lightning_rl.errors import ConfigError

# How long one ray.wait blocks before the sampler checks for stalled calls and replacements.
_POLL_S = 1.0


@dataclass
class _RunnerQueue:
    """The calls in flight on one runner, oldest first, and when the oldest started running."""

    actor: Any
    refs: deque = field(default_factory=deque)
    head_started: float = 0.0
    weights_version: int | None = None  # the version of the state last sent to this runner


class AsyncSampler:
    """Keeps every runner of ``group`` sampling ``num_steps``-step fragments back to back.

    Args:
        group: the runners (and their fault tolerance).
        num_steps: the fragment length of each ``sample`` call (``rollout_fragment_length``).
        max_requests_in_flight_per_env_runner: calls queued per runner; 2 lets a runner start
            its next fragment while the previous one travels to the learner.
        explore: sample actions (training) rather than take the greedy ones.
    """

    def __init__(
        self,
        group: EnvRunnerGroup,
        num_steps: int,
        max_requests_in_flight_per_env_runner: int = 2,
        explore: bool = True,
    ) -> None:
        if max_requests_in_flight_per_env_runner < 1:
            raise ConfigError(
                "max_requests_in_flight_per_env_runner must be >= 1, got "
                f"{max_requests_in_flight_per_env_runner!r}."
            )
        self.group = group
        self.num_steps = int(num_steps)
        self.max_in_flight = int(max_requests_in_flight_per_env_runner)
        self.explore = explore
        self._state: dict[str, Any] | None = None
        self._state_ref: Any = None
        self._version: int | None = None
        self._queues: dict[int, _RunnerQueue] = {}
        self.num_broadcasts = 0

    # -- weights -----------------------------------------------------------------------------
    def broadcast(self, state: dict[str, Any]) -> None:
        """New weights (the learner's ``policy_state()``) for every runner's next call."""
        self._state = state
        self._version = int(state.get("version", 0))
        self.num_broadcasts += 1
        if not self.group.is_local:
            self._state_ref = state_argument(state)
        self._fill()

    # -- results -----------------------------------------------------------------------------
    @property
    def num_in_flight(self) -> int:
        return sum(len(q.refs) for q in self._queues.values())

    def get(self) -> list[RunnerResult]:
        """The fragments ready now; blocks until at least one is (the in-process runner samples
        one fragment here)."""
        self._check_started()
        if self.group.is_local:
            return self.group.sample(self.num_steps, self._state, explore=self.explore)
        import ray

        while True:
            self._fill()
            owners = {ref: index for index, q in self._queues.items() for ref in q.refs}
            if not owners:
                if self.group.num_starting_runners:
                    self.group.poll_replacements(block=True)
                    continue
                raise EnvRunnerFailure("No healthy EnvRunner is left to sample from.")
            ready, _ = ray.wait(list(owners), num_returns=1, timeout=_POLL_S)
            if ready:
                # Take everything that is ready by now, not just the first.
                ready, _ = ray.wait(list(owners), num_returns=len(owners), timeout=0)
            results = self._collect(set(ready))
            self._check_stalls()
            if results:
                self._fill()  # the runners that delivered get their next call right away
                return results

    def poll(self) -> list[RunnerResult]:
        """The fragments ready now, without waiting (none from the in-process runner, which
        only samples when asked to with :meth:`get`)."""
        self._check_started()
        if self.group.is_local:
            return []
        import ray

        self._fill()
        refs = [ref for q in self._queues.values() for ref in q.refs]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        results = self._collect(set(ready))
        self._check_stalls()
        self._fill()
        return results

    def _check_started(self) -> None:
        if self._state is None:
            raise ConfigError("AsyncSampler.get() before the first broadcast(): the runners have no weights.")

    def _collect(self, ready: set[Any]) -> list[RunnerResult]:
        import ray

        results = []
        now = time.monotonic()
        late_after = self.group.fault_tolerance.sample_timeout_s
        # Oldest first per runner, so results keep each runner's order.
        for index, queue in list(self._queues.items()):
            while queue.refs and queue.refs[0] in ready:
                ref = queue.refs.popleft()
                try:
                    result = torch_result(ray.get(ref))
                except Exception as exc:
                    self._fail(index, exc)
                    break
                self.group.record_success(index)
                if late_after and now - queue.head_started > late_after + _POLL_S:
                    self.group.record_late_result()  # a slow runner's late result: dropped
                else:
                    results.append(result)
                queue.head_started = now
        return results

    def _check_stalls(self) -> None:
        timeout = self.group.fault_tolerance.hung_timeout_s
        if not timeout:
            return
        now = time.monotonic()
        for index, queue in list(self._queues.items()):
            if queue.refs and now - queue.head_started > timeout:
                self._fail(index, None)

    def _fail(self, index: int, error: BaseException | None) -> None:
        """Forget the runner's calls; the group probes or replaces it (or raises)."""
        self._queues.pop(index, None)
        hung = self.group.fault_tolerance.hung_timeout_s
        reason = None if error is not None else f"hung for more than {hung:g} s"
        self.group.record_failure(index, error, reason)

    # -- keeping runners busy ----------------------------------------------------------------
    def _fill(self) -> None:
        """Queue calls until every healthy runner has ``max_in_flight`` of them."""
        if self.group.is_local or self._state is None:
            return
        self.group.poll_replacements(block=False)
        now = time.monotonic()
        for index, actor in enumerate(self.group.actors()):
            queue = self._queues.get(index)
            if actor is None:
                self._queues.pop(index, None)
                continue
            if queue is None or queue.actor is not actor:  # new or replaced runner
                queue = self._queues[index] = _RunnerQueue(actor)
            while len(queue.refs) < self.max_in_flight:
                state = None
                if queue.weights_version != self._version:
                    state = self._state_ref
                    queue.weights_version = self._version
                if not queue.refs:
                    queue.head_started = now
                queue.refs.append(actor.sample.remote(self.num_steps, self.explore, state))

    def stop(self) -> None:
        """Forget the calls in flight (the group owns and stops the actors)."""
        self._queues = {}
