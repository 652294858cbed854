"""The base of every experience DataModule: runner groups, sampling, metrics, evaluation.

A DataModule is built in ``setup()`` from the :class:`~lightning_rl.data.source.ExperienceSource`
it serves (the algorithm hands itself over with :meth:`ExperienceDataModule.attach`; a Trainer's
DataModule falls back to ``trainer.lightning_module``). The source is the single source of
configuration (typed :class:`~lightning_rl.data.source.SamplingSettings`); the DataModule turns
it into EnvRunner groups, pulls the policy state to broadcast before sampling, merges the
runners' connector statistics back, and keeps the sampling counters and the episode window that
checkpoints carry. It never imports the algorithms package: data flows up, weights come down
only through ``policy_state()``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import lightning.pytorch as pl
import torch
from tensordict import TensorDict
from torch.utils.data import DataLoader, IterableDataset

from lightning_rl._tree import map_structure
from lightning_rl.data.evaluation import (
    EVALUATION_WORKER_INDEX_OFFSET,
    call_custom_evaluation,
    evaluation_fault_tolerance,
    evaluation_view_settings,
    summarize,
)
from lightning_rl.data.source import ExperienceSource, SamplingSettings
from lightning_rl.distributed import all_gather_object, broadcast_object
from lightning_rl.distributed import rank as dist_rank
from lightning_rl.env_runners.env_runner import EnvRunnerSpec, RunnerResult
from lightning_rl.env_runners.env_runner_group import (
    EnvRunnerGroup,
    EnvRunnerPlacement,
    RayConnection,
    merge_fragments,
)
from lightning_rl.env_runners.evaluation_request import EvaluationRequest
from lightning_rl.env_runners.rllib_callbacks import CustomMetrics
from lightning_rl.errors import ConfigError
from lightning_rl.ray_cluster import defer_ray_sigterm_handler, ensure_ray


def identity_collate(batch: Any) -> Any:
    """Batches come out of the dataset already formed; DataLoader must not touch them."""
    return batch


def results_to_tensordict(results: list[RunnerResult], multi_agent: bool = False) -> Any:
    """Runner outputs -> TensorDicts, tagged with the weights version each row was sampled with.

    Single-agent: ``[num_envs, T]`` per runner -> one ``[sum(num_envs), T]``. Multi-agent:
    ``{policy_id: [M]}`` per runner -> ``{policy_id: [sum(M)]}``. Parts may be torch tensors or
    the read-only numpy views Ray delivers (``EnvRunnerGroup.sample(zero_copy=True)``):
    :func:`merge_fragments` copies those once into the batch; private tensors of a single runner
    are not copied.
    """

    def versions(parts: list[tuple[Any, int]]) -> torch.Tensor:
        rows = [torch.full((len(data["next"]["reward"]),), v, dtype=torch.int64) for data, v in parts]
        return torch.cat(rows)

    if multi_agent:
        per_policy: dict[str, list[tuple[Any, int]]] = {}
        for r in results:
            for policy_id, data in r.data.items():
                per_policy.setdefault(policy_id, []).append((data, r.weights_version))
        batches = {}
        for policy_id, parts in per_policy.items():
            merged = merge_fragments([data for data, _ in parts])
            batches[policy_id] = TensorDict(merged, batch_size=merged["next"]["reward"].shape[:1])
            batches[policy_id]["weights_version"] = versions(parts)
        return batches
    merged = merge_fragments([r.data for r in results])
    batch = TensorDict(merged, batch_size=merged["next"]["reward"].shape[:2])
    rows = versions([(r.data, r.weights_version) for r in results])
    batch["weights_version"] = rows.unsqueeze(-1).expand(batch.batch_size).clone()
    return batch


class ExperienceDataModule(pl.LightningDataModule):
    """Owns the training and evaluation EnvRunner groups of one experience source (an algorithm).

    Keyword ``overrides`` replace the source's settings of the same name (for example
    ``OnPolicyDataModule(num_env_runners=4)``; the names are :class:`SamplingSettings` fields);
    everything else comes from the source.
    """

    def __init__(self, **overrides: Any) -> None:
        super().__init__()
        self.overrides = overrides
        self.train_group: EnvRunnerGroup | None = None
        self.eval_group: EnvRunnerGroup | None = None
        self._source: ExperienceSource | None = None
        # Counters and the smoothing window survive checkpoints (state_dict below).
        self.num_env_steps_sampled_lifetime = 0
        self.num_episodes_lifetime = 0
        self.num_env_runner_restarts = 0
        # Env copies rebuilt inside runners and episodes they dropped (crashes, NaN/inf outputs).
        self.num_env_restarts_lifetime = 0
        self.num_episodes_dropped_lifetime = 0
        self._custom_metrics = CustomMetrics()  # RLlib callbacks' metrics_logger values
        # Wall time spent inside sample() (runner round trips included), for "where time goes".
        self.sampling_seconds_lifetime = 0.0
        self._episode_returns: deque[float] = deque(maxlen=100)
        self._episode_lengths: deque[int] = deque(maxlen=100)
        # Multi-agent: the same window per policy id and per agent id.
        self._policy_returns: dict[str, deque[float]] = {}
        self._agent_returns: dict[str, deque[float]] = {}
        # This iteration's finished episodes as {policy_id: return} (self-play callbacks read it).
        self.last_episode_policy_returns: list[dict[str, float]] = []
        self.last_eval_agent_returns: dict[str, float] = {}
        self.last_metrics: dict[str, float] = {}
        # Worker index of each runner result in the last sample(), in batch row order (each runner
        # contributes num_envs_per_env_runner rows): lets replay that keeps one stream per env copy
        # (sequence replay) follow a copy even when a failed runner's rows are missing.
        self.last_sample_worker_indices: list[int] = []
        self._last_sample_start: float | None = None
        # Set by TrainingRun so that repeated fit() calls keep the actors alive.
        self.persistent = False
        # Wall time of the run (time_total_s), continued across checkpoints.
        self._clock_start: float | None = None
        self._time_total_s_before = 0.0
        # Changes to the evaluation runners' spec (e.g. video recording); see add_evaluation_spec_transform.
        self.evaluation_spec_transforms: list[Callable[[EnvRunnerSpec], EnvRunnerSpec]] = []
        # What a custom_evaluation_function gets as its algorithm (TrainingRun sets itself;
        # None: the source), and the evaluation started with the iteration when it runs in parallel.
        self.evaluation_algorithm: Any = None
        self._pending_evaluation: Future | None = None
        self._evaluation_executor: ThreadPoolExecutor | None = None

    # -- configuration ----------------------------------------------------------------------
    @property
    def source(self) -> ExperienceSource:
        """What this DataModule samples for: the attached source, else the Trainer's module."""
        if self._source is not None:
            return self._source
        if self.trainer is None or self.trainer.lightning_module is None:
            raise ConfigError("This DataModule is used before it was attached to a Trainer and an algorithm.")
        return self.trainer.lightning_module

    def attach(self, source: ExperienceSource) -> None:
        """Serve ``source`` (an algorithm, or anything implementing :class:`ExperienceSource`)."""
        self._source = source

    @property
    def settings(self) -> SamplingSettings:
        """The source's sampling settings with this DataModule's overrides on top (read when
        needed: overrides may change between runs, e.g. for an evaluation command)."""
        return self.source.sampling_settings().with_overrides(self.overrides)

    def setup(self, stage: str) -> None:
        source = self.source
        settings = self.settings
        if self._clock_start is None:
            self._clock_start = time.perf_counter()
        smoothing = settings.metrics_num_episodes_for_smoothing
        self._episode_returns = deque(self._episode_returns, maxlen=smoothing)
        self._episode_lengths = deque(self._episode_lengths, maxlen=smoothing)
        # A Ray driver in this process (a user's ray.init, a Tune trial) must not cut Lightning's
        # graceful SIGTERM stop short, even when this run samples in-process.
        defer_ray_sigterm_handler()
        # Ray starts (or is joined) once, for the training and evaluation runners together; a
        # persistent run (TrainingRun) counts its training runners also when evaluate() comes
        # first (RLlib builds every runner up front), or its first train() would find no CPUs.
        bundles: list[dict[str, float]] = []
        if (stage == "fit" or self.persistent) and self.train_group is None:
            bundles += [self.runner_placement().bundle()] * settings.num_env_runners
        if self.eval_group is None:
            bundles += [self.runner_placement(evaluation=True).bundle()] * settings.evaluation_num_env_runners
        if bundles:
            self._ensure_ray(bundles)
        if stage == "fit" and self.train_group is None:
            self.train_group = EnvRunnerGroup(
                source.env_runner_spec(
                    num_envs=settings.num_envs_per_env_runner, seed_offset=self._rank_seed_offset()
                ),
                num_env_runners=settings.num_env_runners,
                fault_tolerance=source.fault_tolerance_config(),
                placement=self.runner_placement(),
                connection=self.ray_connection(),
            )

    def runner_placement(self, evaluation: bool = False) -> EnvRunnerPlacement:
        """Where the training (or evaluation) runners run, from the settings (overrides first)."""
        kwargs = self.source.env_runner_placement_kwargs(evaluation)
        if "num_cpus_per_env_runner" in self.overrides:
            kwargs["num_cpus"] = self.overrides["num_cpus_per_env_runner"]
        return EnvRunnerPlacement(**kwargs)

    def ray_connection(self) -> RayConnection:
        """Which Ray cluster to use (``address``/``RAY_ADDRESS``) and how long to wait for it."""
        settings = self.settings
        return RayConnection(
            address=settings.address,
            init_kwargs=dict(settings.ray_init_kwargs or {}),
            resources_timeout_s=settings.ray_resources_timeout_s,
        )

    def _ensure_ray(self, bundles: list[dict[str, float]]) -> None:
        connection = self.ray_connection()
        ensure_ray(
            bundles=bundles,
            address=connection.address,
            init_kwargs=connection.init_kwargs,
            timeout_s=connection.resources_timeout_s,
        )

    def _rank_seed_offset(self) -> int:
        """Each DDP rank samples different episodes."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return rank * 1_000_000

    def teardown(self, stage: str) -> None:
        if not self.persistent:
            self.close()

    def close(self) -> None:
        """Stop every runner this DataModule started (after a running parallel evaluation)."""
        if self._evaluation_executor is not None:
            self._evaluation_executor.shutdown(wait=True)
            self._evaluation_executor = None
        self._pending_evaluation = None
        for group in (self.train_group, self.eval_group):
            if group is not None:
                group.stop()
        self.train_group = None
        self.eval_group = None

    # -- sampling ----------------------------------------------------------------------------
    def rollout_fragment_length(self) -> int:
        settings = self.settings
        if settings.rollout_fragment_length != "auto":
            return int(settings.rollout_fragment_length)
        runners = max(1, settings.num_env_runners)
        return max(1, math.ceil(settings.train_batch_size / (runners * settings.num_envs_per_env_runner)))

    def sample(self, num_steps: int | None = None) -> Any:
        """Pull fresh weights, sample one fragment per env copy, fold in metrics and filters."""
        source = self.source
        now = time.perf_counter()
        iteration_seconds = now - self._last_sample_start if self._last_sample_start is not None else None
        self._last_sample_start = now
        # zero_copy: the runners' arrays are copied once, by the merge into the batch below.
        num_steps = num_steps or self.rollout_fragment_length()
        results = self.train_group.sample(num_steps, source.policy_state(), zero_copy=True)
        self.last_sample_worker_indices = [r.worker_index for r in results]
        # Under DDP every rank folds in every rank's episode stats and filter deltas (small data,
        # one collective), so metrics, counters, stopping decisions and observation filters are
        # identical on all ranks while each learns from its own samples.
        everyone = [
            r
            for rank_results in all_gather_object([replace(r, data=None) for r in results])
            for r in rank_results
        ]
        source.merge_connector_deltas([r.connector_deltas for r in everyone])
        batch = results_to_tensordict(results, multi_agent=source.is_multi_agent)
        self._record(everyone, iteration_seconds)
        self.sampling_seconds_lifetime += time.perf_counter() - now
        return batch

    def _record(self, results: list[RunnerResult], iteration_seconds: float | None) -> None:
        steps = sum(r.stats.num_env_steps for r in results)
        sample_seconds = max(r.stats.seconds for r in results)
        returns = [x for r in results for x in r.stats.returns]
        lengths = [x for r in results for x in r.stats.lengths]
        self._episode_returns.extend(returns)
        self._episode_lengths.extend(lengths)
        self.num_env_steps_sampled_lifetime += steps
        self.num_episodes_lifetime += len(returns)
        self.num_env_restarts_lifetime += sum(r.stats.num_env_restarts for r in results)
        self.num_episodes_dropped_lifetime += sum(r.stats.num_episodes_dropped for r in results)
        self.num_env_runner_restarts = self.train_group.num_restarts if self.train_group else 0
        metrics = {
            "env_runners/num_env_steps_sampled": float(steps),
            "env_runners/num_episodes": float(len(returns)),
            "env_runners/sample_env_steps_per_s": steps / sample_seconds if sample_seconds > 0 else 0.0,
            **self.train_group.metrics(),  # healthy runners, restarts, pending replacements ...
            "env_runners/num_env_restarts": float(self.num_env_restarts_lifetime),
            "env_runners/num_episodes_dropped": float(self.num_episodes_dropped_lifetime),
            "num_env_steps_sampled_lifetime": float(self.num_env_steps_sampled_lifetime),
            "num_episodes_lifetime": float(self.num_episodes_lifetime),
            "time_total_s": self.time_total_s,
        }
        if iteration_seconds:
            metrics["env_runners/env_steps_per_s"] = steps / iteration_seconds
        if self._episode_returns:
            window = list(self._episode_returns)
            metrics["env_runners/episode_return_mean"] = sum(window) / len(window)
            metrics["env_runners/episode_return_max"] = float(max(window))
            metrics["env_runners/episode_return_min"] = float(min(window))
            metrics["env_runners/episode_len_mean"] = sum(self._episode_lengths) / len(self._episode_lengths)
        if self.source.is_multi_agent:
            metrics.update(self._record_multi_agent(results))
        if any(r.stats.custom_metrics for r in results):
            custom = self._custom_metrics.merge([r.stats.custom_metrics for r in results])
            metrics.update({f"env_runners/{key}": value for key, value in custom.items()})
        self.last_metrics = metrics

    def _record_multi_agent(self, results: list[RunnerResult]) -> dict[str, float]:
        """RLlib's per-module and per-agent return windows, and agent steps sampled."""
        maxlen = self._episode_returns.maxlen
        self.last_episode_policy_returns = [x for r in results for x in r.stats.policy_returns]
        for episode in self.last_episode_policy_returns:
            for policy_id, ret in episode.items():
                self._policy_returns.setdefault(policy_id, deque(maxlen=maxlen)).append(ret)
        for episode in (x for r in results for x in r.stats.agent_returns):
            for agent_id, ret in episode.items():
                self._agent_returns.setdefault(agent_id, deque(maxlen=maxlen)).append(ret)
        metrics = {
            "env_runners/num_agent_steps_sampled": float(sum(r.stats.num_agent_steps for r in results))
        }
        for policy_id, window in self._policy_returns.items():
            metrics[f"env_runners/module_episode_returns_mean/{policy_id}"] = sum(window) / len(window)
        for agent_id, window in self._agent_returns.items():
            metrics[f"env_runners/agent_episode_returns_mean/{agent_id}"] = sum(window) / len(window)
        return metrics

    @property
    def time_total_s(self) -> float:
        """Wall-clock seconds since this run's first setup, including restored runs' time."""
        running = time.perf_counter() - self._clock_start if self._clock_start is not None else 0.0
        return self._time_total_s_before + running

    # -- evaluation --------------------------------------------------------------------------
    def add_evaluation_spec_transform(self, transform: Callable[[EnvRunnerSpec], EnvRunnerSpec]) -> None:
        """Build evaluation runners from ``transform(spec)`` from now on (e.g. to record videos);
        running evaluation runners are replaced at the next evaluation."""
        if transform in self.evaluation_spec_transforms:
            return
        self.evaluation_spec_transforms.append(transform)
        if self.eval_group is not None:
            self.eval_group.stop()
            self.eval_group = None

    def evaluate(self) -> dict[str, Any]:
        """Run one evaluation (``evaluation_duration`` episodes or env steps, cut at
        ``evaluation_sample_timeout_s``; or the user's ``custom_evaluation_function``) on the
        evaluation runners with frozen filters; with ``evaluation_parallel_to_training`` collect
        the one started with the iteration instead.

        Under DDP only rank 0 evaluates (evaluation happens once); the others receive its result.
        """
        here = None
        if dist_rank() == 0:
            pending, self._pending_evaluation = self._pending_evaluation, None
            here = pending.result() if pending is not None else self._evaluate_here()
        result = broadcast_object(here)
        self.last_eval_agent_returns = result.pop("agent_returns_mean")
        return result

    def start_parallel_evaluation(self) -> None:
        """``evaluation_parallel_to_training``: evaluate the current weights on the evaluation
        actors in the background, collected by the next :meth:`evaluate`. With in-process
        evaluation (``evaluation_num_env_runners=0``) there is nothing to overlap with: the
        evaluation then runs after the iteration, as without the setting."""
        settings = self.settings
        if (
            not settings.evaluation_parallel_to_training
            or settings.evaluation_num_env_runners == 0
            or dist_rank() != 0
            or self._pending_evaluation is not None
        ):
            return
        group = self._evaluation_group()
        # A snapshot taken now: the weights keep changing while the evaluation runs.
        state = map_structure(_detached_copy, self.source.policy_state())
        if self._evaluation_executor is None:
            self._evaluation_executor = ThreadPoolExecutor(1, thread_name_prefix="lightning-rl-evaluation")
        self._pending_evaluation = self._evaluation_executor.submit(self._evaluate_here, group, state)

    def _evaluation_group(self) -> EnvRunnerGroup:
        if self.eval_group is None:
            source = self.source
            settings = self.settings
            duration = int(settings.evaluation_duration)
            runners = settings.evaluation_num_env_runners
            # One env copy per episode (up to 64): evaluation then takes one episode's time.
            per_runner = math.ceil(duration / max(1, runners))
            if settings.evaluation_duration_unit == "timesteps":
                per_runner = 1
            envs = settings.evaluation_num_envs_per_env_runner or min(64, max(1, per_runner))
            placement = self.runner_placement(evaluation=True)
            if runners:
                self._ensure_ray([placement.bundle()] * runners)
            spec = source.env_runner_spec(
                num_envs=envs, evaluation=True, seed_offset=self._rank_seed_offset()
            )
            if hasattr(spec, "rllib_view"):  # what a custom_evaluation_function's sample() does
                spec = replace(spec, rllib_view=evaluation_view_settings(settings, envs))
            for transform in self.evaluation_spec_transforms:
                spec = transform(spec)
            self.eval_group = EnvRunnerGroup(
                spec,
                num_env_runners=runners,
                fault_tolerance=evaluation_fault_tolerance(
                    source.fault_tolerance_config(), settings.evaluation_sample_timeout_s
                ),
                worker_index_offset=EVALUATION_WORKER_INDEX_OFFSET,
                placement=placement,
                connection=self.ray_connection(),
            )
        return self.eval_group

    def _evaluate_here(
        self, group: EnvRunnerGroup | None = None, state: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        settings = self.settings
        group = group if group is not None else self._evaluation_group()
        state = state if state is not None else self.source.policy_state()
        custom = settings.custom_evaluation_function
        if custom is not None:
            start = time.perf_counter()
            group.set_state(state)
            algorithm = self.evaluation_algorithm if self.evaluation_algorithm is not None else self.source
            return call_custom_evaluation(custom, algorithm, group, lambda: time.perf_counter() - start)
        request = EvaluationRequest(
            int(settings.evaluation_duration),
            settings.evaluation_duration_unit,
            settings.evaluation_sample_timeout_s,
        )
        results = group.evaluate(request, state, explore=bool(settings.evaluation_explore))
        return summarize(results, settings.evaluation_sample_timeout_s)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_EvaluationDataset(self), batch_size=None, collate_fn=identity_collate)

    test_dataloader = val_dataloader  # trainer.test runs the same evaluation episodes

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "num_env_steps_sampled_lifetime": self.num_env_steps_sampled_lifetime,
            "num_episodes_lifetime": self.num_episodes_lifetime,
            "episode_returns": list(self._episode_returns),
            "episode_lengths": list(self._episode_lengths),
            "time_total_s": self.time_total_s,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_env_steps_sampled_lifetime = int(state_dict.get("num_env_steps_sampled_lifetime", 0))
        self.num_episodes_lifetime = int(state_dict.get("num_episodes_lifetime", 0))
        self._time_total_s_before = float(state_dict.get("time_total_s", 0.0))
        self._clock_start = time.perf_counter()
        self._episode_returns = deque(
            state_dict.get("episode_returns", []), maxlen=self._episode_returns.maxlen
        )
        self._episode_lengths = deque(
            state_dict.get("episode_lengths", []), maxlen=self._episode_lengths.maxlen
        )
        maxlen = self._episode_returns.maxlen
        self._policy_returns = {
            k: deque(v, maxlen=maxlen) for k, v in state_dict.get("policy_returns", {}).items()
        }
        self._agent_returns = {
            k: deque(v, maxlen=maxlen) for k, v in state_dict.get("agent_returns", {}).items()
        }


def _detached_copy(x: Any) -> Any:
    return x.detach().clone() if isinstance(x, torch.Tensor) else x


class _EvaluationDataset(IterableDataset):
    """One item per validation run: the finished evaluation episodes' returns and lengths."""

    def __init__(self, datamodule: ExperienceDataModule) -> None:
        self.datamodule = datamodule

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield self.datamodule.evaluate()
