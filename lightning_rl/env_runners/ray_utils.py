"""Starting Ray lazily, with exactly the resources a config asks for."""

from __future__ import annotations

import logging
import os

from lightning_rl.errors import ConfigError

log = logging.getLogger(__name__)

_started_here = False


def ensure_ray(num_cpus: float) -> None:
    """Start a local Ray with ``num_cpus`` CPUs unless Ray is already up; check it is big enough.

    An existing Ray session (a user's ``ray.init``, a Tune trial, a test fixture) is reused;
    if it has fewer CPUs than the runners need, actors would wait forever, so fail now instead.
    """
    global _started_here
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        log.info("Starting a local Ray instance with %s CPUs", num_cpus)
        ray.init(
            num_cpus=max(1, int(-(-num_cpus // 1))),
            include_dashboard=False,
            configure_logging=True,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
        _started_here = True
        return
    available = ray.cluster_resources().get("CPU", 0.0)
    if available < num_cpus:
        raise ConfigError(
            f"The running Ray cluster has {available:g} CPUs, but the EnvRunners ask for {num_cpus:g} "
            "(num_env_runners x num_cpus_per_env_runner + evaluation runners). Lower "
            "num_cpus_per_env_runner or the number of runners, or start Ray with more CPUs."
        )


def shutdown_ray_if_started_here() -> None:
    """Shut Ray down only if lightning-rl started it (never a user's or a Tune trial's)."""
    global _started_here
    if not _started_here:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _started_here = False
