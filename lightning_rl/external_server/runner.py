"""The external-env runner: an EnvRunner whose env copies are TCP clients anywhere.

The runner group builds it from :class:`ExternalEnvRunnerSpec` exactly like an
:class:`~lightning_rl.env_runners.EnvRunner` (in-process with ``num_env_runners=0``, or one per
Ray actor), and it answers the same calls: ``sample`` returns a
:class:`~lightning_rl.env_runners.env_runner.RunnerResult` (``[1, M]`` batch of delivered
segments, finished episodes' returns, connector deltas), so the usual DataModules (on-policy
for PPO, replay for DQN/SAC) and checkpoints treat it like any other runner.

Where the env lives: the algorithm's ``env`` still names an env, used for the spaces and for
evaluation episodes on ordinary evaluation runners; training experience comes only from the
clients. A simulator with no Python env can name the spaces instead with the
``ExternalSpaces`` env (``env_config={"observation_space": ..., "action_space": ...}`` in the
protocol's JSON space form); evaluation is then the clients' business (turn the evaluation
loop off and watch ``env_runners/episode_return_mean``, the returns clients report).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch

from lightning_rl.connectors.base import ConnectorSpec
from lightning_rl.constants import DEFAULT_POLICY_ID
from lightning_rl.env_runners.env_runner import EpisodeStats, RunnerResult
from lightning_rl.envs.external.config import ExternalEnvConfig, resolve_external_config
from lightning_rl.errors import ConfigError
from lightning_rl.external_server.backend import PolicyBackend
from lightning_rl.external_server.server import PolicyServer
from lightning_rl.modules.policy_networks import PolicySpec


@dataclass
class ExternalEnvRunnerSpec:
    """Everything an external-env runner needs, as picklable data (the token included)."""

    observation_space: gym.Space  # env side, before the env-to-module connectors
    action_space: gym.Space  # env side, after the module-to-env connectors
    policy_spec: PolicySpec
    external: dict[str, Any]  # ExternalEnvConfig fields, token included
    env_to_module: list[ConnectorSpec] = field(default_factory=list)
    module_to_env: list[ConnectorSpec] = field(default_factory=list)
    # Steps per sample() call are num_steps x num_envs, like num_envs env copies would give.
    num_envs: int = 1
    seed: int | None = None
    num_workers: int = 0
    torch_threads: int | None = None
    update_connectors: bool = True
    policy_id: str = DEFAULT_POLICY_ID
    sample_timeout_s: float | None = 60.0
    # The learner's weights and connector state when the runner was made, so clients that
    # connect before the first sample (and download the model) already get them.
    initial_state: dict[str, Any] | None = None

    @staticmethod
    def runner_class() -> type:
        return ExternalEnvRunner


class ExternalEnvRunner:
    """Serves the policy to external clients and returns what they played; see the module docstring."""

    def __init__(self, spec: ExternalEnvRunnerSpec, worker_index: int = 0, recreated: bool = False) -> None:
        if spec.torch_threads:
            torch.set_num_threads(spec.torch_threads)
        self.spec = spec
        self.worker_index = worker_index
        self.config: ExternalEnvConfig = resolve_external_config(spec.external) or ExternalEnvConfig()
        token = self.config.resolved_token()
        self.observation_space = spec.observation_space
        self.action_space = spec.action_space
        self.backend = PolicyBackend(
            spec.observation_space,
            spec.action_space,
            spec.policy_spec,
            spec.env_to_module,
            spec.module_to_env,
            spec.policy_id,
            update_connectors=spec.update_connectors,
            seed=spec.seed,
        )
        self.backend.set_state(spec.initial_state)
        self.server = PolicyServer(self.backend, self.config, token, worker_index)
        # Actor i of several listens on port + i - 1, so a fixed port range is predictable.
        port = self.config.port + max(0, worker_index - 1) if self.config.port else 0
        self.host, self.port = self.server.start(port)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def get_address(self) -> tuple[str, int]:
        """``(host, port)`` the clients connect to (a method, so Ray actors answer it too)."""
        return self.host, self.port

    def server_stats(self) -> dict[str, Any]:
        return self.server.stats()

    def ping(self) -> str:
        return "pong"

    def get_spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.observation_space, self.action_space

    def set_state(self, state: dict[str, Any] | None) -> None:
        self.server.call(self.backend.set_state, state)

    def sample(
        self, num_steps: int, explore: bool = True, state: dict[str, Any] | None = None
    ) -> RunnerResult:
        """Serve clients until ``num_steps x num_envs`` steps arrived; return them as ``[1, M]``."""
        start = time.perf_counter()
        timeout = self.config.sample_timeout_s
        if timeout is None:
            timeout = self.spec.sample_timeout_s
        result = self.server.sample(state, int(num_steps) * self.spec.num_envs, explore, timeout)
        stats = EpisodeStats(
            returns=list(result.returns),
            lengths=list(result.lengths),
            num_env_steps=result.num_steps,
            seconds=time.perf_counter() - start,
        )
        return RunnerResult(
            result.data, stats, result.connector_deltas, result.weights_version, self.worker_index
        )

    def evaluate(
        self, num_episodes: int, explore: bool = False, state: dict[str, Any] | None = None
    ) -> RunnerResult:
        raise ConfigError(
            "External env runners do not run evaluation episodes: their env lives in the clients. Evaluation "
            "runs on ordinary runners built from the algorithm's env (e.g. env='CartPole-v1'); with the "
            "spaces-only 'ExternalSpaces' env turn evaluation off and watch env_runners/episode_return_mean."
        )

    def stop(self) -> None:
        self.server.stop()
