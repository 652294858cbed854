"""A group of EnvRunners: Ray actors, or one in-process runner when ``num_env_runners=0``.

Weights travel once per iteration, with the ``sample`` calls (inside each call when small,
else one ``ray.put`` whose reference every call gets: :func:`state_argument`), as numpy arrays
both ways (:mod:`.wire` for the state, :func:`numpy_results` for the results). Where the
actors run is :class:`EnvRunnerPlacement`'s business (CPUs, GPUs, custom resources, a
scheduling strategy or label selector, an optional placement group); where Ray comes from is
:mod:`~lightning_rl.ray_cluster`'s (join the cluster that exists, wait for its autoscaler).

Sampling is a small work queue: an iteration needs one fragment per configured runner
(``train_batch_size`` stays what the config says), each healthy runner takes one at a time,
and results are fetched with ``ray.wait`` as they arrive. Fault tolerance, for clusters where
nodes come and go:

* a call that raises in the env, or an actor that Ray reports dead, is a failure: the runner is
  replaced by a fresh actor (in the background) and its fragment is sampled by another runner;
* an actor Ray reports *unavailable* (its node lost contact, Ray is restarting it under the
  actor's own ``max_restarts``) is probed first, and kept if it answers;
* a call slower than ``sample_timeout_s`` does not hold up the iteration: another runner samples
  that fragment, the slow runner is left alone, and its late result is dropped (counted) when it
  arrives; only a call still running after ``env_runner_hung_timeout_s`` marks a hung runner,
  which is replaced;
* training starts once ``min_healthy_env_runners`` runners answer; the rest join as they start,
  and replacements waiting for a node are reported as ``num_pending_replacements``.

No sample is ever used twice: a lost fragment is sampled again, never padded from another.
Results travel as numpy arrays (Ray passes them out of band, zero-copy from the object store;
pickled torch tensors cost ~3x more per fetch, ``benchmarks/scaling.py``). What the driver gets
are read-only views of Ray's shared memory, so they are copied into memory the learner owns
exactly once: by :func:`torch_result` for each result (``sample()``'s default: writable torch
tensors), or, with ``sample(..., zero_copy=True)``, not at all until :func:`merge_fragments`
concatenates the runners' fragments, the one copy a batch needs anyway (the DataModules' path).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lightning_rl.env_runners.env_runner import EnvRunnerSpec, RunnerResult
from lightning_rl.env_runners.evaluation_request import EvaluationRequest
from lightning_rl.env_runners.wire import owned_copy, tensors_from_wire, tensors_to_wire
from lightning_rl.errors import ConfigError, EnvError, LightningRLError
from lightning_rl.ray_cluster import ensure_ray, request_resources, withdraw_resource_requests

log = logging.getLogger(__name__)

SEED_STRIDE = 1000  # runner i's envs use seeds seed + i * SEED_STRIDE + vector index
STOP_TIMEOUT_S = 10.0  # how long stop() lets actors close their envs before killing them
PROBE_GROUP = "probe"  # a concurrency group of its own, so a ping answers while a sample runs
_POLL_S = 1.0  # longest ray.wait before deadlines and replacements are checked again
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
SCHEDULING_STRATEGIES = ("DEFAULT", "SPREAD")


@dataclass
class FaultToleranceConfig:
    """RLlib's ``config.fault_tolerance(...)`` settings, plus the cluster ones."""

    restart_failed_env_runners: bool = True
    max_num_env_runner_restarts: int = 1000
    sample_timeout_s: float | None = 60.0
    ignore_env_runner_failures: bool = False
    # A runner slot that fails this many times in a row, without one successful call in
    # between, is broken rather than flaky (an env that crashes on every reset): give up.
    # 10: a runner whose env crashes in 0.2% of steps fails ~23% of its 128-step calls, so
    # 3 in a row happens by chance; 10 in a row has a chance of ~4e-7.
    max_consecutive_env_runner_failures: int = 10
    # How long a fresh actor may take to start (imports, env creation) when nothing else can
    # sample; replacements started while other runners work may wait for a node indefinitely.
    env_runner_startup_timeout_s: float = 120.0
    # Start sampling once this many runners answer (None: all of them).
    min_healthy_env_runners: int | None = None
    # How long an actor Ray reports unavailable may take to answer a ping before it is replaced.
    env_runner_health_probe_timeout_s: float = 30.0
    # A call still running this long is hung (None: 3 x sample_timeout_s; both None: never).
    env_runner_hung_timeout_s: float | None = None
    # Ray's own actor restarts (the process is restarted in place, e.g. after its node died);
    # 0 when restart_failed_env_runners is off.
    max_actor_restarts: int = 3

    @property
    def hung_timeout_s(self) -> float | None:
        if self.env_runner_hung_timeout_s is not None:
            return self.env_runner_hung_timeout_s
        return None if not self.sample_timeout_s else 3.0 * self.sample_timeout_s


@dataclass
class EnvRunnerPlacement:
    """Where a group's actors run (RLlib's resource names, Ray's scheduling vocabulary).

    Args:
        num_cpus: Ray CPUs per runner (also its torch threads).
        num_gpus: Ray GPUs per runner (fractions share a GPU).
        custom_resources: ``{resource: amount}`` per runner, e.g. ``{"sim_node": 1}`` to run
            only on nodes started with ``--resources='{"sim_node": 8}'``.
        scheduling_strategy: ``"DEFAULT"``, ``"SPREAD"`` or ``{"node_id": hex, "soft": bool}``
            (node affinity).
        label_selector: ``{label: value}`` the node must carry (Ray node labels, e.g.
            ``{"ray.io/accelerator-type": "A100"}``; ``"!v"``, ``"in(a,b)"`` as Ray spells them).
        placement_strategy: reserve all runners' resources at once in a placement group with
            this strategy (``PACK``, ``SPREAD``, ``STRICT_PACK``, ``STRICT_SPREAD``); None: none.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    custom_resources: dict[str, float] = field(default_factory=dict)
    scheduling_strategy: str | dict[str, Any] | None = None
    label_selector: dict[str, str] | None = None
    placement_strategy: str | None = None

    def __post_init__(self) -> None:
        check_placement(self)

    def bundle(self) -> dict[str, float]:
        """One runner's resource demand."""
        bundle = {"CPU": float(self.num_cpus), **{k: float(v) for k, v in self.custom_resources.items()}}
        if self.num_gpus:
            bundle["GPU"] = float(self.num_gpus)
        return bundle


def check_placement(p: EnvRunnerPlacement) -> None:
    """One clear error for the first bad placement value."""
    if not isinstance(p.num_cpus, int | float) or isinstance(p.num_cpus, bool) or p.num_cpus < 0:
        raise ConfigError(f"num_cpus_per_env_runner must be a number >= 0, got {p.num_cpus!r}.")
    if not isinstance(p.num_gpus, int | float) or isinstance(p.num_gpus, bool) or p.num_gpus < 0:
        raise ConfigError(f"num_gpus_per_env_runner must be a number >= 0, got {p.num_gpus!r}.")
    if not isinstance(p.custom_resources, Mapping):
        raise ConfigError(
            "custom_resources_per_env_runner must be a dict {resource: amount}, got "
            f"{p.custom_resources!r}."
        )
    for name, amount in p.custom_resources.items():
        if not isinstance(name, str) or name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ConfigError(
                f"custom_resources_per_env_runner key {name!r} must be a custom resource name; CPUs and "
                "GPUs have their own settings (num_cpus_per_env_runner, num_gpus_per_env_runner)."
            )
        if not isinstance(amount, int | float) or isinstance(amount, bool) or amount <= 0:
            raise ConfigError(
                f"custom_resources_per_env_runner[{name!r}] must be a positive number, got {amount!r}."
            )
    strategy = p.scheduling_strategy
    if isinstance(strategy, str):
        if strategy.upper() not in SCHEDULING_STRATEGIES:
            raise ConfigError(
                f"env_runner_scheduling_strategy {strategy!r} is unknown; the choices are "
                f"{list(SCHEDULING_STRATEGIES)} or {{'node_id': ..., 'soft': bool}}."
            )
    elif isinstance(strategy, Mapping):
        unknown = set(strategy) - {"node_id", "soft"}
        if unknown or not isinstance(strategy.get("node_id"), str):
            raise ConfigError(
                "env_runner_scheduling_strategy as a dict is node affinity: {'node_id': <hex id>, 'soft': "
                f"bool}}; got {dict(strategy)!r}."
            )
    elif strategy is not None:
        raise ConfigError(
            f"env_runner_scheduling_strategy must be one of {list(SCHEDULING_STRATEGIES)}, a node-affinity "
            f"dict or None, got {strategy!r}."
        )
    if p.label_selector is not None and (
        not isinstance(p.label_selector, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in p.label_selector.items())
    ):
        raise ConfigError(f"env_runner_label_selector must be a dict of strings, got {p.label_selector!r}.")
    if p.placement_strategy is not None:
        if str(p.placement_strategy).upper() not in PLACEMENT_STRATEGIES:
            raise ConfigError(
                f"placement_strategy {p.placement_strategy!r} is unknown; the choices are "
                f"{list(PLACEMENT_STRATEGIES)} or None (no placement group)."
            )
        if strategy is not None:
            raise ConfigError(
                "placement_strategy and env_runner_scheduling_strategy exclude each other: a placement "
                "group decides where its runners go."
            )


@dataclass
class RayConnection:
    """Which Ray to use: ``address`` (None: ``RAY_ADDRESS``, else a local start), extra
    ``ray.init`` kwargs, and how long to wait for an autoscaler to add what is missing."""

    address: str | None = None
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    resources_timeout_s: float | None = 600.0


class EnvRunnerFailure(LightningRLError):
    """An EnvRunner failed and could not (or may not) be replaced."""


@dataclass
class _Pending:
    """An actor not in service yet: a fresh one starting, or one Ray reported unavailable that
    is being probed (``probe_deadline``: replaced when it has not answered by then)."""

    actor: Any
    ping: Any
    probe_deadline: float | None = None


@dataclass
class _Call:
    """A sample/evaluate call in flight: which runner, which piece of the work, since when."""

    index: int
    task: int
    started: float


class EnvRunnerGroup:
    """``num_env_runners`` runners sampling in parallel; the in-process runner when 0."""

    def __init__(
        self,
        spec: Any,
        num_env_runners: int = 0,
        num_cpus_per_env_runner: float = 1.0,
        fault_tolerance: FaultToleranceConfig | None = None,
        worker_index_offset: int = 0,
        placement: EnvRunnerPlacement | None = None,
        connection: RayConnection | None = None,
    ) -> None:
        if num_env_runners < 0:
            raise ConfigError(f"num_env_runners must be >= 0, got {num_env_runners}")
        self.spec = spec
        self.num_env_runners = num_env_runners
        self.placement = placement or EnvRunnerPlacement(num_cpus=num_cpus_per_env_runner)
        self.num_cpus_per_env_runner = self.placement.num_cpus
        self.connection = connection or RayConnection()
        self.fault_tolerance = fault_tolerance or FaultToleranceConfig()
        self.worker_index_offset = worker_index_offset
        self.num_restarts = 0
        self.num_failures = 0
        self.num_probe_recoveries = 0  # unavailable actors that answered the probe and were kept
        self.num_late_results_dropped = 0
        self.num_reassigned_fragments = 0  # fragments a runner sampled in place of a lost one
        # Where the driver's time goes in sample()/evaluate() (benchmarks/scaling.py reads them).
        self.seconds_broadcasting = 0.0  # ray.put of the weights
        self.seconds_waiting = 0.0  # ray.wait for the next result
        self.seconds_fetching = 0.0  # ray.get of results and their conversion to torch
        self._last_state: dict[str, Any] | None = None
        self.local_runner: Any = None
        self._actors: list[Any] = []
        self._starting: dict[int, _Pending] = {}  # started or probed actors not yet answering
        self._late: dict[int, tuple[Any, float]] = {}  # index -> (ref, started) of a timed-out call
        self._consecutive_failures: list[int] = []
        self._placement_group: Any = None
        self._remote_class: Any = None
        if num_env_runners == 0:
            self.local_runner = spec.runner_class()(self._runner_spec(0), worker_index=worker_index_offset)
            return
        minimum = self.fault_tolerance.min_healthy_env_runners
        if minimum is not None and not 1 <= minimum <= num_env_runners:
            raise ConfigError(
                f"min_healthy_env_runners must be between 1 and num_env_runners ({num_env_runners}), "
                f"got {minimum!r}."
            )
        bundles = [self.placement.bundle()] * num_env_runners
        ensure_ray(
            bundles=bundles,
            address=self.connection.address,
            init_kwargs=self.connection.init_kwargs,
            timeout_s=self.connection.resources_timeout_s,
        )
        if self.placement.placement_strategy:
            self._placement_group = self._reserve(bundles)
        self._actors = [None] * num_env_runners
        self._consecutive_failures = [0] * num_env_runners
        for index in range(num_env_runners):
            actor = self._start_actor(index)
            self._starting[index] = _Pending(actor, actor.ping.remote())
        self._wait_for_startup(minimum or num_env_runners)

    # -- construction ------------------------------------------------------------------------
    def _runner_spec(self, index: int) -> EnvRunnerSpec:
        seed = None if self.spec.seed is None else self.spec.seed + index * SEED_STRIDE
        threads = self.spec.torch_threads
        if self.num_env_runners > 0 and threads is None:
            threads = max(1, int(self.num_cpus_per_env_runner))
        return dataclasses.replace(
            self.spec, seed=seed, num_workers=self.num_env_runners, torch_threads=threads
        )

    def _reserve(self, bundles: list[dict[str, float]]) -> Any:
        """A placement group holding every runner's bundle, ready (or one clear error)."""
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        strategy = str(self.placement.placement_strategy).upper()
        group = placement_group(bundles, strategy=strategy)
        timeout = self.connection.resources_timeout_s
        ready, _ = ray.wait([group.ready()], timeout=timeout)
        if not ready:
            remove_placement_group(group)
            raise ConfigError(
                f"The placement group of {len(bundles)} x {bundles[0]} with strategy {strategy} was not "
                f"placed within {timeout} s: the cluster's nodes cannot hold it that way (STRICT_SPREAD "
                "needs one node per runner, STRICT_PACK one node for all)."
            )
        return group

    def _actor_options(self, index: int) -> dict[str, Any]:
        from ray.util.scheduling_strategies import (
            NodeAffinitySchedulingStrategy,
            PlacementGroupSchedulingStrategy,
        )

        p, ft = self.placement, self.fault_tolerance
        options: dict[str, Any] = {
            "num_cpus": p.num_cpus,
            "max_restarts": ft.max_actor_restarts if ft.restart_failed_env_runners else 0,
            "max_task_retries": 0,  # a lost call is re-planned here, not silently re-run
        }
        if p.num_gpus:
            options["num_gpus"] = p.num_gpus
        if p.custom_resources:
            options["resources"] = dict(p.custom_resources)
        if self._placement_group is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self._placement_group, placement_group_bundle_index=index
            )
        elif isinstance(p.scheduling_strategy, Mapping):
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                p.scheduling_strategy["node_id"], soft=bool(p.scheduling_strategy.get("soft", False))
            )
        elif p.scheduling_strategy is not None:
            options["scheduling_strategy"] = str(p.scheduling_strategy).upper()
        if p.label_selector:
            options["label_selector"] = dict(p.label_selector)
        return options

    def _start_actor(self, index: int, recreated: bool = False) -> Any:
        import ray

        if self._remote_class is None:
            runner_class = numpy_results(self.spec.runner_class())
            self._remote_class = ray.remote(concurrency_groups={PROBE_GROUP: 1})(runner_class)
        remote_cls = self._remote_class.options(**self._actor_options(index))
        worker_index = self.worker_index_offset + index + 1
        return remote_cls.remote(self._runner_spec(index), worker_index, recreated)

    def _wait_for_startup(self, minimum: int) -> None:
        """Wait until ``minimum`` runners answer; the others keep starting in the background."""
        timeout = self.fault_tolerance.env_runner_startup_timeout_s
        deadline = time.monotonic() + timeout
        while self.num_healthy_runners < minimum:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._promote_started(block=True, timeout=remaining, fail=False):
                import ray

                missing = minimum - self.num_healthy_runners
                self.stop(graceful=False)
                raise EnvRunnerFailure(
                    f"{missing} of the {minimum} EnvRunner actors needed to start did not answer within "
                    f"{timeout:g} s (min_healthy_env_runners); Ray has {ray.available_resources()} free."
                )

    # -- properties --------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.local_runner is not None

    @property
    def num_healthy_runners(self) -> int:
        return 1 if self.is_local else sum(a is not None for a in self._actors)

    @property
    def num_starting_runners(self) -> int:
        """Replacements started but not yet answering."""
        return len(self._starting)

    @property
    def num_pending_replacements(self) -> int:
        """Runner slots without a working actor: replacements waiting for a node or starting up,
        and unavailable actors being probed."""
        return len(self._starting)

    def metrics(self) -> dict[str, float]:
        """Fault-tolerance counters under RLlib-like names (``env_runners/...``)."""
        return {
            "env_runners/num_healthy_env_runners": float(self.num_healthy_runners),
            "env_runners/num_env_runner_restarts": float(self.num_restarts),
            "env_runners/num_pending_replacements": float(self.num_pending_replacements),
            "env_runners/num_late_results_dropped": float(self.num_late_results_dropped),
            "env_runners/num_reassigned_fragments": float(self.num_reassigned_fragments),
            "env_runners/num_probe_recoveries": float(self.num_probe_recoveries),
        }

    def spaces(self) -> tuple[Any, Any]:
        if self.local_runner is not None:
            return self.local_runner.get_spaces()
        import ray

        actor = next(a for a in self._actors if a is not None)
        return ray.get(actor.get_spaces.remote())

    # -- sampling ----------------------------------------------------------------------------
    def sample(
        self,
        num_steps: int,
        state: dict[str, Any] | None = None,
        explore: bool = True,
        zero_copy: bool = False,
    ) -> list[RunnerResult]:
        """One fragment of ``num_steps`` per env copy per configured runner (a lost runner's
        fragment is sampled by another), ordered by runner.

        Each result's data are writable torch tensors, unless ``zero_copy``: then a Ray runner's
        arrays stay as Ray delivered them, numpy views of the object store that numpy refuses to
        write, for :func:`merge_fragments` to copy once into the batch (a large fragment is not
        copied twice, once here and once by the concatenation).
        """
        if state is not None:
            self._last_state = state
        if self.local_runner is not None:
            return [self.local_runner.sample(num_steps, explore, state)]
        tasks = [(num_steps, explore)] * self.num_env_runners
        return self._run_remote("sample", tasks, state, convert=_as_delivered if zero_copy else torch_result)

    def evaluate(
        self,
        duration: int | EvaluationRequest,
        state: dict[str, Any] | None = None,
        explore: bool = False,
    ) -> list[RunnerResult]:
        """``duration`` episodes (an int), or an :class:`EvaluationRequest` (episodes or env
        steps, with a time limit), split as evenly as possible over the runners."""
        if state is not None:
            self._last_state = state
        request = EvaluationRequest.of(duration)
        if self.local_runner is not None:
            return [self.local_runner.evaluate(request, explore, state)]
        shares = request.split(self.num_env_runners)
        return self._run_remote("evaluate", [(share, explore) for share in shares], state)

    def set_state(self, state: dict[str, Any]) -> None:
        """Load ``state`` (weights + connector state) into every runner now, and keep it for
        later calls made without one: a ``custom_evaluation_function`` samples through
        ``foreach_env_runner`` (RLlib's ``worker.sample()``) or calls ``evaluate(...)`` itself.
        The wait for the actors is bounded like ``foreach_env_runner``'s."""
        self._last_state = state
        if self.local_runner is not None:
            self.local_runner.set_state(state)
            return
        ref = state_argument(state)
        refs = [actor.set_state.remote(ref) for actor in self._actors if actor is not None]
        self._get_all(refs, "set_state()", self.fault_tolerance.hung_timeout_s)

    def foreach_env_runner(
        self,
        func: Callable[..., Any],
        *,
        kwargs: dict[str, Any] | None = None,
        local_env_runner: bool = True,
        timeout_seconds: float | None = None,
    ) -> list[Any]:
        """RLlib's ``foreach_env_runner``: ``func(runner, **kwargs)`` on every runner of the group,
        results in runner order (e.g. to change the evaluation envs in a
        ``custom_evaluation_function``). ``runner`` is RLlib's view of it
        (:class:`~lightning_rl.env_runners.rllib_env_runner.RLlibEnvRunnerView`: ``sample()``
        returns episodes, ``get_metrics()``, RLlib's ``worker_index``). A group here has either
        one in-process runner (``num_env_runners=0``) or Ray actors, never both, so
        ``local_env_runner`` has nothing to leave out; ``func`` travels to the actors by
        cloudpickle, like Ray task arguments. The wait is bounded: ``timeout_seconds``, else the
        group's hung-runner limit (``env_runner_hung_timeout_s``, 3 x ``sample_timeout_s``)."""
        del local_env_runner  # RLlib's switch for its driver-side runner next to remote ones
        if self.local_runner is not None:
            return [self.local_runner.apply(func, kwargs)]

        timeout = timeout_seconds if timeout_seconds is not None else self.fault_tolerance.hung_timeout_s
        refs = [actor.apply.remote(func, kwargs) for actor in self._actors if actor is not None]
        return self._get_all(refs, f"foreach_env_runner({getattr(func, '__name__', func)!r})", timeout)

    def _get_all(self, refs: list[Any], what: str, timeout: float | None) -> list[Any]:
        """Every runner's answer, waiting at most ``timeout`` s (one clear error past it); a
        runner's own exception is raised as it is."""
        import ray

        try:
            return ray.get(refs, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise EnvRunnerFailure(
                f"{what} did not finish on all {len(refs)} EnvRunner(s) within {timeout:g} s "
                "(timeout_seconds, else env_runner_hung_timeout_s)."
            ) from None
        except ray.exceptions.RayTaskError as exc:
            raise _unwrap(exc) from None

    def _run_remote(
        self,
        method: str,
        tasks: Sequence[tuple],
        state: dict[str, Any] | None,
        convert: Callable[[Any], Any] | None = None,
    ) -> list[RunnerResult]:
        """Run every task once, each on whichever healthy runner is free, fetching as they come.

        A task whose call fails or times out goes back into the queue for another runner; the
        call only returns when every task has a result (or raises when no runner is left).
        """
        import ray

        convert = convert or torch_result
        # Replacements know nothing yet: always send the latest state (weights + connectors).
        state = state if state is not None else self._last_state
        clock = time.perf_counter()
        state_ref = state_argument(state) if state is not None else None
        self.seconds_broadcasting += time.perf_counter() - clock
        timeout = self.fault_tolerance.sample_timeout_s
        todo = deque(range(len(tasks)))
        done: dict[int, tuple[tuple[int, int], RunnerResult]] = {}
        calls: dict[Any, _Call] = {}
        runner_calls = [0] * self.num_env_runners  # per runner, to keep each runner's results in order
        owner: dict[int, int] = {}  # task -> the runner index it was first given to
        while todo or calls:
            self._promote_started(block=False)
            busy = {c.index for c in calls.values()} | set(self._late)
            for index, actor in enumerate(self._actors):
                if not todo:
                    break
                if actor is None or index in busy:
                    continue
                task = todo.popleft()
                if owner.setdefault(task, index) != index:
                    self.num_reassigned_fragments += 1
                ref = getattr(actor, method).remote(*tasks[task], state_ref)
                calls[ref] = _Call(index, task, time.monotonic())
                busy.add(index)
            if not calls and not self._late:
                if not any(a is not None for a in self._actors) and not self._starting:
                    raise EnvRunnerFailure(f"No healthy EnvRunner is left to run {method}().")
                self._promote_started(block=True)
                continue
            clock = time.perf_counter()
            ready = self._wait_any([*calls, *(ref for ref, _ in self._late.values())], calls)
            self.seconds_waiting += time.perf_counter() - clock
            for ref in ready:
                call = calls.pop(ref, None)
                if call is None:
                    self._finish_late(ref)
                    continue
                clock = time.perf_counter()
                try:
                    result = convert(ray.get(ref))
                except Exception as exc:
                    todo.append(call.task)
                    self._handle_failure(call.index, exc)
                    continue
                finally:
                    self.seconds_fetching += time.perf_counter() - clock
                self._consecutive_failures[call.index] = 0
                runner_calls[call.index] += 1
                done[call.task] = ((call.index, runner_calls[call.index]), result)
            now = time.monotonic()
            for ref, call in list(calls.items()):
                if timeout and now - call.started > timeout:
                    # Too slow for this iteration: another runner samples the task; this runner
                    # finishes in its own time and its result is dropped then.
                    del calls[ref]
                    self._late[call.index] = (ref, call.started)
                    todo.append(call.task)
                    log.warning(
                        "EnvRunner %d is slower than sample_timeout_s=%g s; its %s() result will be dropped "
                        "and another runner samples in its place.",
                        call.index + 1,
                        timeout,
                        method,
                    )
            self._check_hung()
        return [result for _, result in sorted(done.values(), key=lambda item: item[0])]

    def _wait_any(self, refs: list[Any], calls: dict[Any, _Call]) -> list[Any]:
        """The refs ready now, waiting at most until the next deadline (or the poll interval)."""
        import ray

        timeout = self.fault_tolerance.sample_timeout_s
        wait = _POLL_S
        if timeout:
            now = time.monotonic()
            for call in calls.values():
                wait = min(wait, max(0.0, call.started + timeout - now))
        ready, _ = ray.wait(refs, num_returns=1, timeout=wait)
        if ready:  # everything else that is ready by now too
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        return ready

    def _finish_late(self, ref: Any) -> None:
        """A timed-out call came back: drop its result; the runner is free again (or failed)."""
        import ray

        index = next((i for i, (late, _) in self._late.items() if late == ref), None)
        if index is None:
            return
        del self._late[index]
        try:
            ray.get(ref)
        except Exception as exc:
            self._handle_failure(index, exc)
            return
        self.num_late_results_dropped += 1
        log.info("Dropped the late result of EnvRunner %d (it is sampling again).", index + 1)

    def _check_hung(self) -> None:
        hung = self.fault_tolerance.hung_timeout_s
        if hung is None:
            return
        now = time.monotonic()
        for index, (_, started) in list(self._late.items()):
            if now - started > hung:
                del self._late[index]
                self._handle_failure(index, None, f"hung: one call ran for more than {hung:g} s")

    # -- hooks for callers that run their own remote calls (asynchronous sampling) --------------
    def record_success(self, index: int) -> None:
        """Runner ``index`` answered a call the caller made itself (resets its failure streak)."""
        self._consecutive_failures[index] = 0

    def record_failure(self, index: int, error: BaseException | None, reason: str | None = None) -> None:
        """Runner ``index`` failed a call the caller made itself (``error`` None: it hung): the
        same handling as in :meth:`sample` (probe, replacement in the background, or an
        :class:`EnvRunnerFailure` when the limits are used up)."""
        self._handle_failure(index, error, reason)

    def record_late_result(self) -> None:
        """A caller dropped a result that came after ``sample_timeout_s``."""
        self.num_late_results_dropped += 1

    def poll_replacements(self, block: bool = False) -> None:
        """Put replacements that answered their ping into service (wait for one if ``block``)."""
        self._promote_started(block)

    def _promote_started(self, block: bool, timeout: float | None = None, fail: bool = True) -> bool:
        """Put started (or probed) actors that answered their ping into service.

        Without ``block`` nothing waits: a replacement may wait for a node as long as it takes
        while other runners work (a probed actor only until its probe deadline). With ``block``
        (nothing else can sample) it waits up to ``timeout`` (default
        ``env_runner_startup_timeout_s``) for one; returns whether one answered (or, with
        ``fail``, counts the oldest as a failed start)."""
        if not self._starting:
            return False
        import ray

        startup = self.fault_tolerance.env_runner_startup_timeout_s if timeout is None else timeout
        refs = {pending.ping: index for index, pending in self._starting.items()}
        ready, _ = ray.wait(
            list(refs), num_returns=1 if block else len(refs), timeout=startup if block else 0
        )
        if block and not ready:
            if fail:
                index = next(iter(self._starting))
                self._handle_failure(index, TimeoutError(f"did not start within {startup:g} s"))
            return False
        if ready:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        promoted = False
        for ref in ready:
            index = refs[ref]
            pending = self._starting.pop(index)
            try:
                ray.get(ref)
            except Exception as exc:
                if not fail:  # start-up: a runner that cannot even start is a config error
                    self.stop(graceful=False)
                    raise _unwrap(exc) from None
                with contextlib.suppress(Exception):
                    ray.kill(pending.actor, no_restart=True)
                self._handle_failure(index, exc, probed=True)
                continue
            if pending.probe_deadline is not None:
                self.num_probe_recoveries += 1
                log.warning("EnvRunner %d answers its health probe again; kept in service.", index + 1)
            self._actors[index] = pending.actor
            promoted = True
        now = time.monotonic()
        for index, pending in list(self._starting.items()):
            if pending.probe_deadline is not None and now > pending.probe_deadline:
                del self._starting[index]
                with contextlib.suppress(Exception):
                    ray.kill(pending.actor, no_restart=True)
                probe = self.fault_tolerance.env_runner_health_probe_timeout_s
                self._handle_failure(index, None, f"unavailable, no answer to a health probe in {probe:g} s")
        return promoted

    def _probe(self, actor: Any) -> bool:
        """Whether ``actor`` answers a ping within the probe timeout (in its own concurrency
        group, so a long sample call does not block the answer)."""
        import ray

        try:
            ping = actor.ping.options(concurrency_group=PROBE_GROUP).remote()
            return ray.get(ping, timeout=self.fault_tolerance.env_runner_health_probe_timeout_s) == "pong"
        except Exception:
            return False

    def _handle_failure(
        self, index: int, error: BaseException | None, reason: str | None = None, probed: bool = False
    ) -> None:
        """A failed call or start of runner ``index``: probe it (Ray says it is unavailable or
        died, which a Ray restart or a network blip may undo), else replace it, else give up."""
        import ray

        self.num_failures += 1
        self._consecutive_failures[index] += 1
        actor = self._actors[index]
        if (
            actor is not None
            and not probed
            and isinstance(error, ray.exceptions.RayActorError)
            and self._consecutive_failures[index] < self.fault_tolerance.max_consecutive_env_runner_failures
        ):
            # Probe without blocking the others: the actor waits in _starting until it answers
            # (kept) or its probe deadline passes (replaced).
            log.warning("EnvRunner %d is unavailable (%s); probing it before replacing it.", index + 1, error)
            self._actors[index] = None
            self._late.pop(index, None)
            ping = actor.ping.options(concurrency_group=PROBE_GROUP).remote()
            deadline = time.monotonic() + self.fault_tolerance.env_runner_health_probe_timeout_s
            self._starting[index] = _Pending(actor, ping, deadline)
            return
        error = _unwrap(error) if error is not None else None
        reason = reason or (f"{error}" if error is not None else "stalled")
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
        self._starting[index] = _Pending(replacement, replacement.ping.remote())
        if self._placement_group is None:
            request_resources([self.placement.bundle()])  # a lost node: let an autoscaler add one

    def _kill(self, index: int) -> None:
        import ray

        actor = self._actors[index]
        if actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self._actors[index] = None
        self._late.pop(index, None)
        starting = self._starting.pop(index, None)
        if starting is not None:
            with contextlib.suppress(Exception):
                ray.kill(starting.actor, no_restart=True)

    def ping(self) -> list[bool]:
        """Health of each runner (True = answers)."""
        if self.local_runner is not None:
            return [True]
        return [actor is not None and self._probe(actor) for actor in self._actors]

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
            starting = [pending.actor for pending in self._starting.values()]
            if graceful and live:
                with contextlib.suppress(Exception):
                    refs = [actor.stop.remote() for actor in live]
                    ray.wait(refs, num_returns=len(refs), timeout=STOP_TIMEOUT_S)
            for actor in live + starting:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            self._actors = []
            self._starting = {}
            self._late = {}
            # An autoscaler keeps what was requested until told otherwise: nodes asked for these
            # runners must be free to scale down once they are gone.
            with contextlib.suppress(Exception):
                withdraw_resource_requests()
        if self._placement_group is not None:
            with contextlib.suppress(Exception):
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(self._placement_group)
            self._placement_group = None

    def __del__(self) -> None:  # actors must not outlive a forgotten group
        with contextlib.suppress(Exception):
            self.stop(graceful=False)  # no waiting inside garbage collection


# -- the data path: numpy across Ray, torch on each side -----------------------------------------
_NUMPY_CLASSES: dict[type, type] = {}


# A state whose pickle (arrays included) is at most this many bytes goes with each call itself;
# a larger one is put into the object store once for all calls. Ray sends arguments under
# 100 KiB inside the call (larger ones it puts into the object store per call).
INLINE_STATE_BYTES = 64 * 1024


def state_argument(state: dict[str, Any]) -> Any:
    """The learner's ``state`` as the argument of the actors' calls: its tensors as arrays
    (:mod:`.wire`), and sent inside each call when small, else one ``ray.put`` they share.

    Small is the common case (a CartPole PPO state is ~20 KB): a ``ray.put`` then cost ~0.75 ms
    and each actor's fetch of it another round trip; inside the calls a 2-runner iteration
    took ~1 ms less (10.3 -> 9.3 ms).
    """
    import ray

    wire = tensors_to_wire(state)
    if _pickled_bytes(wire) <= INLINE_STATE_BYTES:
        # Copies: an asynchronous sampler sends this with calls made after the learner's next
        # optimizer steps, which change the parameters the views would show.
        return owned_copy(wire)
    return ray.put(wire)


def _pickled_bytes(value: Any) -> float:
    """The size of ``value`` as Ray serialises it (cloudpickle, arrays out of band, not copied);
    infinite when it cannot be pickled, so ``ray.put`` reports that with Ray's own message."""
    from ray import cloudpickle

    buffers: list[Any] = []
    try:
        in_band = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception:
        return float("inf")
    return len(in_band) + sum(memoryview(buffer).nbytes for buffer in buffers)


def numpy_results(runner_class: type) -> type:
    """``runner_class`` as a Ray actor runs it: ``sample``/``evaluate`` return numpy arrays
    instead of tensors, and the learner's state arrives as arrays (:mod:`.wire`) that
    ``sample``/``evaluate``/``set_state`` turn back into tensors first.

    Ray pickles numpy arrays out of band (the bytes go to the object store untouched and the
    driver reads them in place), torch tensors in band through torch's own reducer: ~3x slower
    for an Atari-sized fragment. The conversion is a view, free on the runner's side.
    """
    cached = _NUMPY_CLASSES.get(runner_class)
    if cached is not None:
        return cached

    def sample(self: Any, *args: Any, **kwargs: Any) -> RunnerResult:
        args, kwargs = tensors_from_wire((args, kwargs))
        return _data_to_numpy(runner_class.sample(self, *args, **kwargs))

    def evaluate(self: Any, *args: Any, **kwargs: Any) -> RunnerResult:
        args, kwargs = tensors_from_wire((args, kwargs))
        return _data_to_numpy(runner_class.evaluate(self, *args, **kwargs))

    def set_state(self: Any, state: Any) -> None:
        runner_class.set_state(self, tensors_from_wire(state))

    wrapped = type(
        runner_class.__name__,
        (runner_class,),
        {
            "sample": sample,
            "evaluate": evaluate,
            "set_state": set_state,
            "__module__": runner_class.__module__,
        },
    )
    _NUMPY_CLASSES[runner_class] = wrapped
    return wrapped


def _map(fn: Any, tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _map(fn, v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_map(fn, v) for v in tree)
    return fn(tree)


def _tensor_to_numpy(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.dtype not in (torch.bfloat16,) and not x.is_complex():
        return x.detach().cpu().numpy()
    return x


def _numpy_to_tensor(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        # Arrays read from Ray's object store are read-only views of shared memory: copy once
        # into memory the learner may write to.
        return torch.from_numpy(x if x.flags.writeable else x.copy())
    return x


def _view_tensor(x: Any) -> Any:
    """A tensor over ``x``'s memory, for an operation that only reads it (never returned).

    torch warns that a tensor over a read-only array could be written through; the callers
    here only read it (``torch.cat`` into fresh memory), so that one warning is silenced.
    """
    if isinstance(x, np.ndarray):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(x)
    return x


def merge_fragments(parts: Sequence[Any]) -> Any:
    """Runners' data trees (same structure) -> one tree of torch tensors joined on dim 0.

    The one copy of the data path: arrays Ray delivered as read-only views of its object store
    are copied once, here, into memory the learner owns; a single part that is private already
    (a local runner's tensors, a writable array) is used as it is. All-numpy leaves are joined
    by numpy, which puts large arrays on transparent huge pages (filling fresh memory costs
    about a third of torch's allocator's 4 KiB pages for an Atari fragment, ``scaling.py``).
    """
    first = parts[0]
    if isinstance(first, dict):
        return {key: merge_fragments([part[key] for part in parts]) for key in first}
    if isinstance(first, list | tuple):
        return type(first)(merge_fragments([part[i] for part in parts]) for i in range(len(first)))
    if len(parts) == 1:
        return _numpy_to_tensor(first)
    if all(isinstance(part, np.ndarray) for part in parts):
        return torch.from_numpy(np.concatenate(parts))
    return torch.cat([torch.as_tensor(_view_tensor(part)) for part in parts])


def _as_delivered(result: Any) -> Any:
    """``sample(zero_copy=True)``: the result as Ray delivered it (see :func:`merge_fragments`)."""
    return result


def _data_to_numpy(result: Any) -> Any:
    if isinstance(result, RunnerResult) and result.data is not None:
        return dataclasses.replace(result, data=_map(_tensor_to_numpy, result.data))
    return result


def torch_result(result: Any) -> Any:
    """A runner result fetched from Ray with its numpy arrays as writable torch tensors."""
    if isinstance(result, RunnerResult) and result.data is not None:
        return dataclasses.replace(result, data=_map(_numpy_to_tensor, result.data))
    return result


def _unwrap(exc: BaseException) -> BaseException:
    """The user's own exception out of Ray's wrappers, so messages stay readable."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return exc


__all__ = [
    "EnvError",
    "EnvRunnerFailure",
    "EnvRunnerGroup",
    "EnvRunnerPlacement",
    "FaultToleranceConfig",
    "RayConnection",
    "merge_fragments",
    "numpy_results",
    "state_argument",
    "torch_result",
]
