"""A group of EnvRunners: Ray actors, or one in-process runner when ``num_env_runners=0``.

Weights travel once per iteration (one ``ray.put``, every actor gets the reference with its
``sample`` call). Fault tolerance lives here: a runner whose env raises, whose actor dies or
that stalls past ``sample_timeout_s`` is dropped from this iteration, replaced by a fresh
actor that gets the current weights and connector state, and counted in the metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lightning_rl.env_runners.env_runner import EnvRunnerSpec, RunnerResult
from lightning_rl.env_runners.ray_utils import ensure_ray
from lightning_rl.errors import ConfigError, EnvError, LightningRLError

log = logging.getLogger(__name__)

SEED_STRIDE = 1000  # runner i's envs use seeds seed + i * SEED_STRIDE + vector index
STOP_TIMEOUT_S = 10.0  # how long stop() lets actors close their envs before killing them


@dataclass
class FaultToleranceConfig:
    """RLlib's ``config.fault_tolerance(...)`` settings."""

    restart_failed_env_runners: bool = True
    max_num_env_runner_restarts: int = 1000
    sample_timeout_s: float | None = 60.0
    ignore_env_runner_failures: bool = False
    # A runner slot that fails this many times in a row, without one successful call in
    # between, is broken rather than flaky (an env that crashes on every reset): give up.
    # 10: a runner whose env crashes in 0.2% of steps fails ~23% of its 128-step calls, so
    # 3 in a row happens by chance; 10 in a row has a chance of ~4e-7.
    max_consecutive_env_runner_failures: int = 10
    # How long a fresh actor may take to start (imports, env creation) before it counts as failed.
    env_runner_startup_timeout_s: float = 120.0


class EnvRunnerFailure(LightningRLError):
    """An EnvRunner failed and could not (or may not) be replaced."""


class EnvRunnerGroup:
    """``num_env_runners`` runners sampling in parallel; the in-process runner when 0."""

    def __init__(
        self,
        spec: Any,
        num_env_runners: int = 0,
        num_cpus_per_env_runner: float = 1.0,
        fault_tolerance: FaultToleranceConfig | None = None,
        worker_index_offset: int = 0,
    ) -> None:
        if num_env_runners < 0:
            raise ConfigError(f"num_env_runners must be >= 0, got {num_env_runners}")
        self.spec = spec
        self.num_env_runners = num_env_runners
        self.num_cpus_per_env_runner = num_cpus_per_env_runner
        self.fault_tolerance = fault_tolerance or FaultToleranceConfig()
        self.worker_index_offset = worker_index_offset
        self.num_restarts = 0
        self.num_failures = 0
        self._last_state: dict[str, Any] | None = None
        self.local_runner: Any = None
        self._actors: list[Any] = []
        self._starting: dict[int, tuple[Any, Any]] = {}  # replacements not yet answering
        self._consecutive_failures: list[int] = []
        if num_env_runners == 0:
            self.local_runner = spec.runner_class()(self._runner_spec(0), worker_index=worker_index_offset)
        else:
            ensure_ray(num_env_runners * num_cpus_per_env_runner)
            self._actors = [self._start_actor(i) for i in range(num_env_runners)]
            self._consecutive_failures = [0] * num_env_runners
            self._wait_for_startup()

    # -- construction ------------------------------------------------------------------------
    def _runner_spec(self, index: int) -> EnvRunnerSpec:
        seed = None if self.spec.seed is None else self.spec.seed + index * SEED_STRIDE
        threads = self.spec.torch_threads
        if self.num_env_runners > 0 and threads is None:
            threads = max(1, int(self.num_cpus_per_env_runner))
        return dataclasses.replace(
            self.spec, seed=seed, num_workers=self.num_env_runners, torch_threads=threads
        )

    def _start_actor(self, index: int, recreated: bool = False) -> Any:
        import ray

        remote_cls = ray.remote(num_cpus=self.num_cpus_per_env_runner, max_restarts=0)(
            self.spec.runner_class()
        )
        worker_index = self.worker_index_offset + index + 1
        return remote_cls.remote(self._runner_spec(index), worker_index, recreated)

    def _wait_for_startup(self) -> None:
        import ray

        refs = [actor.ping.remote() for actor in self._actors]
        timeout = self.fault_tolerance.env_runner_startup_timeout_s
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if pending:
            self.stop(graceful=False)
            raise EnvRunnerFailure(
                f"{len(pending)} of {len(refs)} EnvRunner actors did not start within {timeout:g} s; "
                f"Ray has {ray.available_resources().get('CPU', 0):g} CPUs free."
            )
        for ref in ready:
            try:
                ray.get(ref)
            except Exception as exc:
                self.stop(graceful=False)
                raise _unwrap(exc) from None

    # -- properties --------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.local_runner is not None

    @property
    def num_healthy_runners(self) -> int:
        return 1 if self.is_local else sum(a is not None for a in self._actors)

    def spaces(self) -> tuple[Any, Any]:
        if self.local_runner is not None:
            return self.local_runner.get_spaces()
        import ray

        return ray.get(self._actors[0].get_spaces.remote())

    # -- sampling ----------------------------------------------------------------------------
    def sample(
        self, num_steps: int, state: dict[str, Any] | None = None, explore: bool = True
    ) -> list[RunnerResult]:
        """One fragment of ``num_steps`` per env copy from every healthy runner."""
        if state is not None:
            self._last_state = state
        if self.local_runner is not None:
            return [self.local_runner.sample(num_steps, explore, state)]
        return self._run_remote("sample", [(num_steps, explore)] * len(self._actors), state)

    def evaluate(
        self, num_episodes: int, state: dict[str, Any] | None = None, explore: bool = False
    ) -> list[RunnerResult]:
        """``num_episodes`` episodes split as evenly as possible over the runners."""
        if state is not None:
            self._last_state = state
        if self.local_runner is not None:
            return [self.local_runner.evaluate(num_episodes, explore, state)]
        n = len(self._actors)
        shares = [num_episodes // n + (1 if i < num_episodes % n else 0) for i in range(n)]
        return self._run_remote("evaluate", [(share, explore) for share in shares], state, skip_zero=True)

    def _run_remote(
        self, method: str, args: Sequence[tuple], state: dict[str, Any] | None, skip_zero: bool = False
    ) -> list[RunnerResult]:
        """Call ``method`` on every healthy actor; failed ones are replaced in the background.

        The iteration completes with the samples of the runners that succeeded; replacements
        join as soon as they answer (actor start-up takes ~1.5 s, which would otherwise stall
        every iteration that had a failure). Only when no runner succeeded does the call wait
        for a replacement and try again, so a broken env (failing every time) ends in one clear
        error after ``max_consecutive_env_runner_failures`` tries instead of an endless loop.
        """
        import ray

        # Replacements know nothing yet: always send the latest state (weights + connectors).
        state = state if state is not None else self._last_state
        state_ref = ray.put(state) if state is not None else None
        timeout = self.fault_tolerance.sample_timeout_s
        while True:
            self._promote_started(block=not any(actor is not None for actor in self._actors))
            calls: dict[Any, int] = {}
            for index, (actor, call_args) in enumerate(zip(self._actors, args, strict=True)):
                if actor is None or (skip_zero and call_args[0] == 0):
                    continue
                calls[getattr(actor, method).remote(*call_args, state_ref)] = index
            if not calls:
                if self._starting:
                    continue
                raise EnvRunnerFailure(f"No healthy EnvRunner is left to run {method}().")
            ready, pending = ray.wait(list(calls), num_returns=len(calls), timeout=timeout)
            results: list[RunnerResult] = []
            failed: list[tuple[int, BaseException | None]] = [(calls[ref], None) for ref in pending]
            for ref in ready:
                try:
                    results.append(ray.get(ref))
                    self._consecutive_failures[calls[ref]] = 0
                except Exception as exc:
                    failed.append((calls[ref], _unwrap(exc)))
            for index, error in failed:
                self._handle_failure(index, error, timeout)
            if results:
                return results

    # -- hooks for callers that run their own remote calls (asynchronous sampling) --------------
    def record_success(self, index: int) -> None:
        """Runner ``index`` answered a call the caller made itself (resets its failure streak)."""
        self._consecutive_failures[index] = 0

    def record_failure(self, index: int, error: BaseException | None) -> None:
        """Runner ``index`` failed a call the caller made itself (``error`` None: it stalled past
        ``sample_timeout_s``): the same handling as in :meth:`sample`, i.e. a replacement
        starts in the background, or an :class:`EnvRunnerFailure` when the limits are used up."""
        self._handle_failure(
            index, _unwrap(error) if error is not None else None, self.fault_tolerance.sample_timeout_s
        )

    def poll_replacements(self, block: bool = False) -> None:
        """Put replacements that answered their ping into service (wait for one if ``block``)."""
        self._promote_started(block)

    @property
    def num_starting_runners(self) -> int:
        """Replacements started but not yet answering."""
        return len(self._starting)

    def _promote_started(self, block: bool) -> None:
        """Put replacements that answered their ping into service (wait for one if ``block``)."""
        if not self._starting:
            return
        import ray

        startup = self.fault_tolerance.env_runner_startup_timeout_s
        refs = {ping: index for index, (_, ping) in self._starting.items()}
        ready, _ = ray.wait(
            list(refs), num_returns=1 if block else len(refs), timeout=startup if block else 0
        )
        if block and not ready:
            index = next(iter(self._starting))
            self._handle_failure(index, TimeoutError(f"did not start within {startup:g} s"), None)
            return
        for ref in ready:
            index = refs[ref]
            actor, _ = self._starting.pop(index)
            try:
                ray.get(ref)
            except Exception as exc:
                ray.kill(actor, no_restart=True)
                self._handle_failure(index, _unwrap(exc), None)
                continue
            self._actors[index] = actor

    def _handle_failure(self, index: int, error: BaseException | None, timeout: float | None) -> None:
        self.num_failures += 1
        self._consecutive_failures[index] += 1
        reason = f"stalled for more than {timeout:g} s" if error is None else f"{error}"
        ft = self.fault_tolerance
        self._kill(index)
        if not ft.restart_failed_env_runners:
            if ft.ignore_env_runner_failures:
                log.warning("EnvRunner %d failed and is dropped: %s", index + 1, reason)
                return
            raise EnvRunnerFailure(
                f"EnvRunner {index + 1} failed ({reason}) and restart_failed_env_runners is off."
            ) from error
        if self._consecutive_failures[index] >= ft.max_consecutive_env_runner_failures:
            raise EnvRunnerFailure(
                f"EnvRunner {index + 1} failed {self._consecutive_failures[index]} times in a row without "
                f"one successful call; giving up. Last error: {reason}"
            ) from error
        if self.num_restarts >= ft.max_num_env_runner_restarts:
            raise EnvRunnerFailure(
                f"EnvRunner {index + 1} failed ({reason}) and the limit of "
                f"{ft.max_num_env_runner_restarts} restarts (max_num_env_runner_restarts) is used up."
            ) from error
        log.warning("EnvRunner %d failed (%s); starting a replacement.", index + 1, reason)
        self.num_restarts += 1
        replacement = self._start_actor(index, recreated=True)
        # It gets the current weights and connector state with its first sample() call.
        self._starting[index] = (replacement, replacement.ping.remote())

    def _kill(self, index: int) -> None:
        import ray

        actor = self._actors[index]
        if actor is not None:
            ray.kill(actor, no_restart=True)
        self._actors[index] = None
        starting = self._starting.pop(index, None)
        if starting is not None:
            ray.kill(starting[0], no_restart=True)

    def ping(self) -> list[bool]:
        """Health of each runner (True = answers)."""
        if self.local_runner is not None:
            return [True]
        import ray

        health = []
        for actor in self._actors:
            try:
                health.append(actor is not None and ray.get(actor.ping.remote(), timeout=10) == "pong")
            except Exception:
                health.append(False)
        return health

    def actors(self) -> list[Any]:
        return list(self._actors)

    def stop(self, graceful: bool = True) -> None:
        """Release every runner (idempotent).

        ``graceful``: each live actor first runs its own ``stop()`` (closes its envs, which
        ends external-env servers and video files, and publishes its recordings) for up to
        ``STOP_TIMEOUT_S``; whatever has not finished by then, a hung env say, is killed.
        """
        if self.local_runner is not None:
            self.local_runner.stop()
            self.local_runner = None
        if self._actors or self._starting:
            import ray

            live = [actor for actor in self._actors if actor is not None]
            starting = [actor for actor, _ in self._starting.values() if actor is not None]
            if graceful and live:
                with contextlib.suppress(Exception):
                    refs = [actor.stop.remote() for actor in live]
                    ray.wait(refs, num_returns=len(refs), timeout=STOP_TIMEOUT_S)
            for actor in live + starting:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            self._actors = []
            self._starting = {}

    def __del__(self) -> None:  # actors must not outlive a forgotten group
        with contextlib.suppress(Exception):
            self.stop(graceful=False)  # no waiting inside garbage collection


def _unwrap(exc: BaseException) -> BaseException:
    """The user's own exception out of Ray's wrappers, so messages stay readable."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return exc


__all__ = ["EnvError", "EnvRunnerFailure", "EnvRunnerGroup", "FaultToleranceConfig"]
