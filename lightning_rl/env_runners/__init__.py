"""EnvRunners (env copies + connectors + inference policy) and groups of them on Ray."""

from lightning_rl.env_runners.env_runner import EnvRunner, EnvRunnerSpec, EpisodeStats, RunnerResult
from lightning_rl.env_runners.env_runner_group import EnvRunnerFailure, EnvRunnerGroup, FaultToleranceConfig

__all__ = [
    "EnvRunner",
    "EnvRunnerFailure",
    "EnvRunnerGroup",
    "EnvRunnerSpec",
    "EpisodeStats",
    "FaultToleranceConfig",
    "RunnerResult",
]
