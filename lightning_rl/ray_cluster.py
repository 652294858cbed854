"""Joining the Ray cluster that exists, or starting a local one; waiting for its resources.

Where Ray comes from, in this order:

1. Ray is already initialised in this process (a user's ``ray.init``, a Tune trial, a test
   fixture, a Ray Train worker): it is used as it is.
2. An address is given (the ``address`` setting, else the ``RAY_ADDRESS`` environment variable
   that ``ray job submit`` and KubeRay's RayJob set): ``ray.init(address=...)`` joins that
   cluster. Ray refuses ``num_cpus``/``num_gpus`` when joining, so none are passed; the
   cluster's own nodes define what exists.
3. Otherwise a local Ray starts with exactly the CPUs and custom resources the runners ask for
   (so a script that places runners by a custom resource runs unchanged on a laptop).

``ray_init_kwargs`` reach ``ray.init`` in cases 2 and 3 (``namespace``, ``runtime_env``,
``logging_level`` ...). What the runners need is then checked against the cluster's nodes: on a
cluster that lacks it (a KubeRay head with 0 CPUs, workers still to come), the resources are
requested from the autoscaler (``ray.autoscaler.sdk.request_resources``), the wait is logged with
what is missing, and after ``timeout_s`` one error names the missing resources. A Ray started
here has no autoscaler, so there a shortfall fails at once.

The local Ray of case 3 may have been started already, in the background, by
:func:`start_local_ray_early` (``lightning-rl fit`` does, before it imports Lightning):
``ensure_ray`` then waits for that start and uses it if it is exactly the Ray it would start.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_rl.errors import ConfigError

log = logging.getLogger(__name__)

_started_here = False
# A local Ray being started in the background (start_local_ray_early): (started, kwargs, outcome).
_early_start: tuple[threading.Event, dict[str, Any], dict[str, BaseException | None]] | None = None
# What this process asked the autoscaler for (bundles), so that it can withdraw the request.
_requested: list[dict[str, float]] = []

# How often the cluster's nodes are re-read while waiting for resources.
_POLL_S = 1.0
# What every ray.init of ours passes unless ray_init_kwargs say otherwise.
_INIT_DEFAULTS: dict[str, Any] = {
    "include_dashboard": False,
    "logging_level": logging.WARNING,
    "log_to_driver": True,
}
# ray.init settings that would make an address-less join start a second, local cluster.
_LOCAL_ONLY_INIT_KWARGS = ("num_cpus", "num_gpus", "resources")


def _is_rays_handler(handler: Any) -> bool:
    return callable(handler) and str(getattr(handler, "__module__", "")).startswith("ray.")


def defer_ray_sigterm_handler(before: Any = None) -> None:
    """Keep Lightning's graceful SIGTERM stop working in a process that runs a Ray driver.

    ``ray.init`` makes SIGTERM call ``sys.exit`` at once, wherever the process is. Lightning's
    own handler, installed at each ``fit``, chains the handler it finds, so with Ray's underneath
    the run died mid-step with ``SystemExit`` instead of stopping after the step with
    ``SIGTERMException``, and ``CheckpointOnInterrupt`` saved nothing: every run with Ray
    runners lost its interrupt checkpoint. Here Ray's handler is wrapped: called by a handler
    installed on top of it (Lightning's, during ``fit``), it leaves the stop to that handler;
    as the process's own handler it exits as Ray's does (so ``atexit`` still shuts Ray down).
    ``before`` is the handler from before a ``ray.init`` of ours: if someone already handled
    SIGTERM (Lightning mid-``fit``, the user), theirs is put back instead.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set signal handlers (Ray sets none elsewhere either)
    current = signal.getsignal(signal.SIGTERM)
    if not _is_rays_handler(current):
        return  # not Ray's (ours already, Lightning's, the user's or the default): left alone
    if callable(before) and not _is_rays_handler(before):
        signal.signal(signal.SIGTERM, before)
        return

    def sigterm(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) is not sigterm:
            return  # chained by the handler on top (Lightning's): it stops the run after the step
        current(signum, frame)

    sigterm.__module__ = __name__
    signal.signal(signal.SIGTERM, sigterm)


def ray_address(address: str | None = None) -> str | None:
    """The cluster to join: the ``address`` setting, else ``RAY_ADDRESS``, else None (local)."""
    if address:
        return str(address)
    env = os.environ.get("RAY_ADDRESS", "").strip()
    return env or None


def total_demand(bundles: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The sum of ``bundles`` per resource name."""
    total: dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            total[name] = total.get(name, 0.0) + float(amount)
    return total


def local_init_kwargs(
    bundles: Sequence[Mapping[str, float]], init_kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``ray.init`` kwargs of the local Ray that holds ``bundles`` exactly (case 3 above)."""
    demand = total_demand(bundles)
    cpus = max(1, math.ceil(demand.pop("CPU", 0.0) - 1e-9))
    custom = {k: v for k, v in demand.items() if k not in ("GPU", "memory", "object_store_memory")}
    kwargs = {**_INIT_DEFAULTS, **(init_kwargs or {})}
    kwargs.setdefault("num_cpus", cpus)
    if custom:
        kwargs.setdefault("resources", custom)
    # "local": a new instance even when a `ray start` cluster runs on this machine (a plain
    # ray.init() would join it and then refuse num_cpus); joining is what address is for.
    kwargs.setdefault("address", "local")
    return kwargs


def normalise_bundles(
    num_cpus: float, bundles: Sequence[Mapping[str, float]] | None
) -> list[dict[str, float]]:
    """``bundles`` without zero entries; ``num_cpus`` as one-CPU bundles when there are none."""
    if bundles is None:
        whole = math.floor(num_cpus)
        bundles = [{"CPU": 1.0}] * whole + ([{"CPU": num_cpus - whole}] if num_cpus > whole else [])
    return [{k: float(v) for k, v in b.items() if float(v) > 0} for b in bundles]


def start_local_ray_early(bundles: Sequence[Mapping[str, float]]) -> bool:
    """Start the local Ray that ``ensure_ray(bundles=bundles)`` would start, in a background thread.

    Ray's own processes (GCS, raylet, workers) take seconds to come up, mostly on another core;
    started before the process imports Lightning and builds the run, they come up meanwhile.
    ``ensure_ray`` waits for this start and uses that Ray only when it is exactly the one it
    would start (same CPUs, resources and init settings, no address); otherwise it shuts it down
    and starts or joins the right one, so a wrong early guess costs time, never a wrong cluster.
    Returns whether a start began (not when Ray is initialised, an address is set, or one began).
    """
    global _early_start
    if _early_start is not None or ray_address() is not None:
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs = local_init_kwargs(normalise_bundles(0.0, bundles))
    outcome: dict[str, BaseException | None] = {"error": None}
    started = threading.Event()

    def start() -> None:
        try:
            import ray

            if ray.is_initialized():
                outcome["error"] = RuntimeError("Ray was initialised already")
                return
            # Ray warns that it sets no SIGTERM handler outside the main thread: ensure_ray
            # handles SIGTERM in the main thread (defer_ray_sigterm_handler), so that is fine.
            worker_log = logging.getLogger("ray._private.worker")
            quiet = _DropMessage("SIGTERM handler is not set")
            worker_log.addFilter(quiet)
            try:
                ray.init(**kwargs)
            finally:
                worker_log.removeFilter(quiet)
        except BaseException as exc:  # reported (and started over) by ensure_ray
            outcome["error"] = exc
        finally:
            started.set()
        # Ray's processes get a parent-death signal when the *thread* that started them ends
        # (Linux's PR_SET_PDEATHSIG), so this thread lives as long as the process does.
        threading.Event().wait()

    _early_start = (started, kwargs, outcome)
    threading.Thread(target=start, name="lightning-rl-ray-start", daemon=True).start()
    return True


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def wait_for_early_ray_start() -> dict[str, Any] | None:
    """Wait for :func:`start_local_ray_early`'s start (``ensure_ray`` does): its ``ray.init``
    kwargs if Ray is up from it, else None (no early start, or it failed: the error is logged)."""
    global _early_start
    if _early_start is None:
        return None
    started, kwargs, outcome = _early_start
    started.wait()
    _early_start = None
    if outcome["error"] is not None:
        log.debug("The early local Ray start failed (%s); starting it now", outcome["error"])
        return None
    return kwargs


def ensure_ray(
    num_cpus: float = 0.0,
    *,
    bundles: Sequence[Mapping[str, float]] | None = None,
    address: str | None = None,
    init_kwargs: Mapping[str, Any] | None = None,
    timeout_s: float | None = 600.0,
) -> None:
    """Make sure Ray runs and can hold ``bundles`` (one resource dict per actor).

    ``num_cpus`` alone (no ``bundles``) asks for that many CPUs as one-CPU bundles, for callers
    that only need some CPUs. See the module docstring for where Ray comes from.
    """
    global _started_here
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    early = wait_for_early_ray_start()
    import ray

    bundles = normalise_bundles(num_cpus, bundles)
    local = local_init_kwargs(bundles, init_kwargs)
    if early is not None and (ray_address(address) is not None or early != local):
        ray.shutdown()  # started for other settings than this run's (the early guess was wrong)
        early = None
    if early is not None or not ray.is_initialized():
        target = ray_address(address)
        if target is not None:
            kwargs = {**_INIT_DEFAULTS, **(init_kwargs or {})}
            clash = [k for k in _LOCAL_ONLY_INIT_KWARGS if k in kwargs]
            if clash:
                raise ConfigError(
                    f"ray_init_kwargs {clash} cannot be used when joining the cluster at {target!r}: the "
                    "cluster's nodes define its resources. Remove them, or unset address/RAY_ADDRESS."
                )
            log.info("Joining the Ray cluster at %s", target)
            before = signal.getsignal(signal.SIGTERM)
            ray.init(address=target, **kwargs)
            defer_ray_sigterm_handler(before)
        else:
            if early is None:  # else exactly this local Ray is up already, started early
                custom = local.get("resources")
                log.info(
                    "Starting a local Ray instance with %s CPUs%s",
                    local["num_cpus"],
                    f" and {custom}" if custom else "",
                )
                before = signal.getsignal(signal.SIGTERM)
                ray.init(**local)
                defer_ray_sigterm_handler(before)
            _started_here = True
            _check_local_resources(bundles)
            return
    elif address and ray_address(address) != address:
        log.debug("Ray is already initialised; the address setting %r is not used", address)
    defer_ray_sigterm_handler()
    wait_for_resources(bundles, timeout_s)


def _check_local_resources(bundles: Sequence[Mapping[str, float]]) -> None:
    missing = missing_resources(bundles)
    if missing:
        raise ConfigError(
            f"The local Ray started here cannot hold the EnvRunners: missing {missing}. Lower the "
            "runners' resources (num_gpus_per_env_runner ...), or join a cluster that has them "
            "(address= or RAY_ADDRESS)."
        )


def _alive_nodes() -> list[dict[str, float]]:
    import ray

    return [dict(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive")]


def missing_resources(bundles: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """What the cluster's live nodes lack to place every bundle (first fit, biggest first);
    empty when all fit. Node totals are used: resources held by other work free up in time,
    resources that no node has never come without new nodes."""
    free = _alive_nodes()
    missing: dict[str, float] = {}
    for bundle in sorted(bundles, key=lambda b: -sum(b.values())):
        for node in free:
            if all(node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items()):
                for k, v in bundle.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:  # fits on no node: the whole bundle must come from new nodes
            for k, v in bundle.items():
                missing[k] = missing.get(k, 0.0) + v
    return missing


def wait_for_resources(bundles: Sequence[Mapping[str, float]], timeout_s: float | None) -> None:
    """Return once the cluster's nodes can hold ``bundles``; meanwhile ask the autoscaler.

    Raises:
        ConfigError: after ``timeout_s`` (None: wait forever), naming what is still missing.
    """
    if not bundles:
        return
    missing = missing_resources(bundles)
    if not missing:
        return
    request_resources(bundles)
    log.warning(
        "The Ray cluster cannot place the EnvRunners yet: missing %s. Requested %d bundle(s) %s from "
        "the autoscaler; waiting up to %s s for nodes to join.",
        missing,
        len(bundles),
        _short(bundles),
        "inf" if timeout_s is None else f"{timeout_s:g}",
    )
    start = time.monotonic()
    while missing:
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise ConfigError(
                f"The Ray cluster still lacks {missing} after waiting {timeout_s:g} s for the autoscaler "
                f"(the EnvRunners ask for {total_demand(bundles)} in {len(bundles)} actor(s)). Add nodes "
                "with those resources, lower num_env_runners / num_cpus_per_env_runner / "
                "custom_resources_per_env_runner, or raise ray_resources_timeout_s."
            )
        time.sleep(_POLL_S)
        missing = missing_resources(bundles)
    log.warning("The Ray cluster can now place the EnvRunners (waited %.1f s).", time.monotonic() - start)


def request_resources(bundles: Sequence[Mapping[str, float]]) -> None:
    """Ask the autoscaler for ``bundles`` on top of what this process asked before."""
    from ray.autoscaler.sdk import request_resources as ask

    _requested.extend(dict(b) for b in bundles)
    try:
        ask(bundles=list(_requested))
    except Exception as exc:  # a cluster without an autoscaler: the wait still works
        log.debug("request_resources failed: %s", exc)


def withdraw_resource_requests() -> None:
    """Tell the autoscaler this process no longer needs what it requested."""
    if not _requested:
        return
    _requested.clear()
    import ray

    if not ray.is_initialized():
        return
    from ray.autoscaler.sdk import request_resources as ask

    try:
        ask(bundles=[])
    except Exception as exc:
        log.debug("request_resources([]) failed: %s", exc)


def _short(bundles: Sequence[Mapping[str, float]]) -> str:
    distinct = []
    for b in bundles:
        if dict(b) not in distinct:
            distinct.append(dict(b))
    return ", ".join(f"{sum(dict(b) == d for b in bundles)} x {d}" for d in distinct)


def shutdown_ray_if_started_here() -> None:
    """Shut Ray down only if lightning-rl started it (never a user's or a Tune trial's)."""
    global _started_here
    withdraw_resource_requests()
    if not _started_here:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _started_here = False
