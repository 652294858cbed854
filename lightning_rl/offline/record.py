"""Recording a data set with a trained policy, without training: ``record_episodes(algo, "data/", 50_000)``.

Training with ``output=`` records what the learner samples along the way (a mix of early and
late policies); an expert data set for imitation is recorded afterwards from the final
policy. This runs the algorithm's own EnvRunner recipe (same connectors, frozen filter
statistics, same action mapping) in this process with a recorder attached.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import TYPE_CHECKING, Any

from lightning_rl.env_runners.env_runner import EnvRunner
from lightning_rl.errors import ConfigError
from lightning_rl.offline.config import check_output_settings
from lightning_rl.offline.recorder import RecordingSpec

if TYPE_CHECKING:
    from lightning_rl.algorithms.base import Algorithm


def record_episodes(
    algorithm: Algorithm,
    output: str | os.PathLike,
    num_env_steps: int,
    *,
    num_envs: int = 8,
    explore: bool = True,
    output_config: dict[str, Any] | None = None,
    seed: int | None = None,
) -> list[str]:
    """Run ``algorithm``'s current policy for ``num_env_steps`` env steps and record them.

    Returns the Parquet files written. ``explore=True`` samples actions (as the policy acted
    while training); False records its greedy actions.
    """
    if isinstance(num_env_steps, bool) or not isinstance(num_env_steps, int) or num_env_steps <= 0:
        raise ConfigError(f"num_env_steps must be a positive integer, got {num_env_steps!r}.")
    check_output_settings(output, output_config, algorithm.is_multi_agent)
    spec = algorithm.env_runner_spec(num_envs=num_envs, evaluation=True)
    spec = dataclasses.replace(
        spec,
        recorder=RecordingSpec(str(output), dict(output_config or {}), {"env": algorithm.hparams.get("env")}),
        seed=seed if seed is not None else spec.seed,
    )
    runner = EnvRunner(spec)
    state = algorithm.policy_state()
    steps_per_env = math.ceil(num_env_steps / num_envs)
    fragment = min(steps_per_env, 1000)
    try:
        done = 0
        while done < steps_per_env:
            length = min(fragment, steps_per_env - done)
            runner.sample(length, explore=explore, state=state)
            done += length
    finally:
        runner.stop()
    return list(runner.recorder.writer.files_written) if runner.recorder.writer is not None else []
