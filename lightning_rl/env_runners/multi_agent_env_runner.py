"""The multi-agent EnvRunner: env copies of a MultiAgentEnv, one batched forward per policy.

Each step gathers the observations of every acting agent in every env copy, groups them by
the policy the mapping function assigned (once per agent per episode), runs each policy's
connectors and forward pass once on its whole group, and steps every env copy with its
action dict. Agent trajectories (``agent_trajectories.py``) turn the env's dicts into
per-agent transitions, and ``sample`` returns them per policy as flat batches ``[M]`` whose
segments end with ``("next", "done")`` set, which is exactly what GAE or n-step returns need.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lightning_rl._tree import map_structure, stack_structures, stack_tensor_structures, to_torch
from lightning_rl.connectors.base import ConnectorSpec, EnvToModulePipeline, ModuleToEnvPipeline
from lightning_rl.env_runners.agent_trajectories import AgentTrajectories, CompletedSegment
from lightning_rl.env_runners.env_runner import EpisodeStats, RunnerResult, to_env_actions
from lightning_rl.env_runners.evaluation_request import EvaluationBudget, EvaluationRequest
from lightning_rl.env_runners.multi_agent_episode import Episode, MultiAgentRunnerEpisode
from lightning_rl.env_runners.rllib_callbacks import EPISODE_HOOKS, CallbackSettings, MetricsLogger
from lightning_rl.env_runners.transition_batch import transitions_to_batch
from lightning_rl.envs.multi_agent import ALL, MultiAgentEnv
from lightning_rl.envs.registration import EnvContext, EnvCreator
from lightning_rl.envs.vector import (
    CallDeadline,
    EnvCallTimeout,
    all_finite,
    check_non_finite_mode,
    close_failed_copy,
    copy_failure,
    rebuilt_seed,
)
from lightning_rl.errors import ConfigError, EnvError, SpaceError
from lightning_rl.modules.policy_networks import InferencePolicy, PolicySpec

log = logging.getLogger(__name__)


class _CopyFailed(Exception):
    """An env copy raised, hung or gave a non-finite value; it was reset or rebuilt."""


@dataclass
class MultiAgentPolicySetup:
    """What a runner needs to run one policy: its recipe, spaces and connector specs."""

    policy_spec: PolicySpec
    observation_space: gym.Space  # env side, before connectors
    action_space: gym.Space  # env side, after module-to-env connectors
    env_to_module: list[ConnectorSpec] = field(default_factory=list)
    module_to_env: list[ConnectorSpec] = field(default_factory=list)


@dataclass
class MultiAgentEnvRunnerSpec:
    env_creator: EnvCreator
    policies: dict[str, MultiAgentPolicySetup]
    policy_mapping_fn: Callable[..., str]
    env_config: dict = field(default_factory=dict)
    num_envs: int = 1
    seed: int | None = None
    num_workers: int = 0
    torch_threads: int | None = None
    update_connectors: bool = True
    # As in EnvRunnerSpec: a failing env copy is rebuilt and only its episode dropped; NaN/inf
    # rewards or observations raise (naming the env) or drop the episode; sample_timeout_s
    # bounds each env call of an in-process runner.
    restart_failed_sub_environments: bool = True
    max_consecutive_sub_environment_failures: int = 10
    on_non_finite_env_output: str = "error"
    sample_timeout_s: float | None = None
    # RLlib callbacks (``config.callbacks(...)``) for training samples; None costs nothing per step.
    callbacks: CallbackSettings | None = None

    @staticmethod
    def runner_class() -> type:
        return MultiAgentEnvRunner


__all__ = ["Episode", "MultiAgentEnvRunner", "MultiAgentEnvRunnerSpec", "MultiAgentPolicySetup"]


class MultiAgentEnvRunner:
    """Samples per-policy batches from ``num_envs`` copies of a :class:`MultiAgentEnv`."""

    def __init__(self, spec: MultiAgentEnvRunnerSpec, worker_index: int = 0, recreated: bool = False) -> None:
        if spec.torch_threads:
            torch.set_num_threads(spec.torch_threads)
        self.spec = spec
        self.worker_index = worker_index
        context = EnvContext(
            spec.env_config,
            worker_index=worker_index,
            num_workers=spec.num_workers,
            recreated_worker=recreated,
        )
        self._context = context
        check_non_finite_mode(spec.on_non_finite_env_output)
        self.envs: list[MultiAgentEnv] = [self._make_env(i) for i in range(spec.num_envs)]
        self._failures = [0] * spec.num_envs  # consecutive failures per env copy
        self._rebuilds = [0] * spec.num_envs
        self._reseed: set[int] = set()  # rebuilt copies whose next reset gets a derived seed
        self._num_restarts = 0
        self._num_dropped = 0
        self._last_failure: str | None = None
        self._deadline: CallDeadline | None = None
        self.policies: dict[str, InferencePolicy] = {}
        self.env_to_module: dict[str, EnvToModulePipeline] = {}
        self.module_to_env: dict[str, ModuleToEnvPipeline] = {}
        self._discrete_start: dict[str, int] = {}
        for policy_id, setup in spec.policies.items():
            self._add_policy(policy_id, setup)
        self.policy_mapping_fn = spec.policy_mapping_fn
        self.generator = torch.Generator()
        if spec.seed is not None:
            self.generator.manual_seed(int(spec.seed))
        self.weights_version = -1
        self.trajectories = AgentTrajectories()
        # RLlib callbacks, built here (one object per runner process); episodes record their
        # agents' steps only when an episode hook is overridden.
        self.callbacks = spec.callbacks.build() if spec.callbacks is not None else None
        self.metrics = MetricsLogger()
        self._track_episodes = self.callbacks is not None and self.callbacks.has(*EPISODE_HOOKS)
        self._finished_episodes: list[MultiAgentRunnerEpisode] = []
        self._episodes = [MultiAgentRunnerEpisode() for _ in self.envs]
        self._episode_counter = 0
        self._acting: list[dict[Hashable, Any]] | None = None  # module obs of agents to act, per env copy
        self._seeded = False

    def _make_env(self, index: int) -> MultiAgentEnv:
        env = self.spec.env_creator(self._context.copy_with(vector_index=index))
        if not isinstance(env, MultiAgentEnv):
            raise EnvError(
                f"Env {self.spec.env_creator.name!r} is a {type(env).__name__}, not a lightning_rl "
                "MultiAgentEnv; "
                "wrap PettingZoo envs with PettingZooEnv / ParallelPettingZooEnv."
            )
        return env

    def _add_policy(self, policy_id: str, setup: MultiAgentPolicySetup) -> None:
        self.policies[policy_id] = setup.policy_spec.build()
        self.env_to_module[policy_id] = EnvToModulePipeline.from_specs(
            setup.env_to_module, setup.observation_space, setup.action_space
        )
        space = setup.action_space
        self._discrete_start[policy_id] = int(space.start) if isinstance(space, gym.spaces.Discrete) else 0
        self.module_to_env[policy_id] = ModuleToEnvPipeline.from_specs(
            setup.module_to_env, setup.action_space
        )

    # -- state from the learner ----------------------------------------------------------------
    def set_state(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        built = set()  # a policy built now loads its weights even if the version did not move
        for policy_id, setup in (state.get("new_policies") or {}).items():
            if policy_id not in self.policies:
                self._add_policy(policy_id, setup)
                built.add(policy_id)
        if state.get("policy_mapping_fn") is not None:
            self.policy_mapping_fn = state["policy_mapping_fn"]
        new_version = state.get("version", 0) != self.weights_version
        for policy_id, policy_state in state.get("policies", {}).items():
            if policy_id not in self.policies:
                continue
            if (new_version or policy_id in built) and policy_state.get("weights") is not None:
                self.policies[policy_id].load_weights(policy_state["weights"])
            if policy_state.get("extra"):
                self.policies[policy_id].set_extra(policy_state["extra"])
        self.weights_version = int(state.get("version", 0))
        for policy_id, connector_state in (state.get("connectors") or {}).items():
            if policy_id in self.env_to_module:
                self.env_to_module[policy_id].set_state(connector_state)

    def ping(self) -> str:
        return "pong"

    def apply(self, func: Any, kwargs: dict[str, Any] | None = None) -> Any:
        """``func(self, **kwargs)``: what ``EnvRunnerGroup.foreach_env_runner`` runs here."""
        return func(self, **(kwargs or {}))

    def get_spaces(self) -> tuple[dict, dict]:
        env = self.envs[0]
        return dict(env.observation_spaces), dict(env.action_spaces)

    # -- helpers -------------------------------------------------------------------------------
    def _label(self, index: int) -> str:
        return f"env {self.spec.env_creator.name!r} (copy {index} on env runner {self.worker_index})"

    def _call_env(self, index: int, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the env copy; a failure rebuilds it (raising :class:`_CopyFailed`) or is an EnvError."""
        deadline = self._deadline
        try:
            if deadline is not None:
                deadline.call_started = time.monotonic()
            return getattr(self.envs[index], method)(*args, **kwargs)
        except (EnvError, ConfigError):
            raise
        except (Exception, EnvCallTimeout) as exc:
            self._failures[index] += 1
            self._last_failure = copy_failure(
                self._label(index),
                method,
                exc,
                failures=self._failures[index],
                restart=self.spec.restart_failed_sub_environments,
                max_failures=self.spec.max_consecutive_sub_environment_failures,
            )
            if self._deadline is not None:
                self._deadline.rearm()
            close_failed_copy(self.envs[index], exc)
            self.envs[index] = self._make_env(index)
            self._num_restarts += 1
            self._rebuilds[index] += 1
            self._reseed.add(index)
            raise _CopyFailed from exc
        finally:
            if deadline is not None:
                deadline.call_started = None

    def _check_finite(self, index: int, what: str, values: Any) -> None:
        """Raise (mode "error") or :class:`_CopyFailed` (mode "drop_episode") on a NaN/inf."""
        if all_finite(values):
            return
        if self.spec.on_non_finite_env_output == "error":
            raise EnvError(
                f"{self._label(index)} returned a non-finite {what} (NaN, inf or beyond float32's range). "
                "Fix the env, or set on_non_finite_env_output='drop_episode' to drop such episodes."
            )
        self._failures[index] += 1
        if self._failures[index] > self.spec.max_consecutive_sub_environment_failures:
            raise EnvError(
                f"{self._label(index)} returned a non-finite {what} {self._failures[index]} times in a row."
            )
        self._last_failure = f"{self._label(index)} returned a non-finite {what}"
        log.warning("%s returned a non-finite %s; dropping its episode.", self._label(index), what)
        raise _CopyFailed

    def _policy_for(self, index: int, agent_id: Hashable) -> str:
        episode = self._episodes[index]
        policy_id = episode.mapping.get(agent_id)
        if policy_id is None:
            env = self.envs[index]
            if agent_id not in env.observation_spaces:
                raise SpaceError(
                    f"Agent {agent_id!r} received an observation but has no entry in the env's observation "
                    f"spaces {list(env.observation_spaces)}."
                )
            policy_id = self.policy_mapping_fn(agent_id, episode, worker=self)
            if policy_id not in self.policies:
                raise ConfigError(
                    f"policy_mapping_fn mapped agent {agent_id!r} to policy {policy_id!r}, which is not one "
                    "of "
                    f"the policies {sorted(self.policies)}."
                )
            episode.mapping[agent_id] = policy_id
        return policy_id

    def _to_module(self, items: list[tuple[int, Hashable, Any]], update: bool) -> list[Any]:
        """Raw observations of (env copy, agent) pairs -> module observations, batched per policy."""
        out: list[Any] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for row, (index, agent_id, _) in enumerate(items):
            groups.setdefault(self._policy_for(index, agent_id), []).append(row)
        for policy_id, rows in groups.items():
            batch = to_torch(stack_structures([items[r][2] for r in rows]))
            module_obs = self.env_to_module[policy_id](batch, update=update)
            for i, row in enumerate(rows):
                out[row] = map_structure(lambda x, i=i: x[i], module_obs)
        return out

    def _reset(self, index: int, update: bool, record: bool = True) -> None:
        seed = None
        if not self._seeded and self.spec.seed is not None:
            seed = int(self.spec.seed) + index
        while True:
            if index in self._reseed and self.spec.seed is not None:  # repeatable runs with crashes
                self._reseed.discard(index)
                seed = rebuilt_seed(int(self.spec.seed) + index, self._rebuilds[index])
            try:
                raw, _ = self._call_env(index, "reset", seed=seed)
                self._check_finite(index, "observation from reset()", [np.asarray(o) for o in _leaves(raw)])
                break
            except _CopyFailed:
                continue
        # Unique per runner and reproducible: mapping functions may use it to pick seats/opponents.
        self._episode_counter += 1
        hooks = record and self._track_episodes  # evaluation episodes are not reported
        episode = self._episodes[index] = MultiAgentRunnerEpisode(
            self.worker_index * 1_000_000_000 + self._episode_counter, index, record=hooks
        )
        items = [(index, agent_id, obs) for agent_id, obs in raw.items()]
        self._acting[index] = dict(zip(raw, self._to_module(items, update), strict=True))
        if hooks:
            for agent_id, obs in raw.items():
                episode.observe(agent_id, obs)
            self._episode_hook("on_episode_start", episode)

    def _reset_all(self, update: bool, record: bool = True) -> None:
        self._acting = [{} for _ in self.envs]
        for index in range(len(self.envs)):
            self._reset(index, update, record)
        self._seeded = True

    # -- RLlib callbacks (only with an episode hook) ------------------------------------------
    def _episode_hook(self, name: str, episode: MultiAgentRunnerEpisode) -> None:
        self.callbacks.call(  # type: ignore[union-attr]
            name,
            episode=episode,
            env_runner=self,
            metrics_logger=self.metrics,
            env=self.envs[episode.env_index],
            env_index=episode.env_index,
            rl_module=self.policies,
        )

    # -- the loop ------------------------------------------------------------------------------
    def _act(self, explore: bool, record: bool) -> list[dict[Hashable, Any]]:
        """One batched forward per policy over every acting agent; returns action dicts."""
        groups: dict[str, list[tuple[int, Hashable, Any]]] = {}
        for index, acting in enumerate(self._acting):
            for agent_id, obs in acting.items():
                groups.setdefault(self._episodes[index].mapping[agent_id], []).append((index, agent_id, obs))
        actions: list[dict[Hashable, Any]] = [{} for _ in self.envs]
        for policy_id, items in groups.items():
            obs_batch = stack_tensor_structures([obs for _, _, obs in items])
            out = self.policies[policy_id](obs_batch, explore, self.generator)
            env_actions = to_env_actions(
                self.module_to_env[policy_id], out["action"], self._discrete_start[policy_id]
            )
            for row, (index, agent_id, obs) in enumerate(items):
                action = env_actions[row]
                actions[index][agent_id] = action.item() if action.ndim == 0 else action
                if record and self._track_episodes:
                    self._episodes[index].act(agent_id, actions[index][agent_id])
                if record:
                    extras = {k: v[row] for k, v in out.items() if k != "action"}
                    self.trajectories.act(index, agent_id, policy_id, obs, out["action"][row], extras)
        return actions

    def _step_all(
        self,
        actions: list[dict],
        update: bool,
        record: bool,
        stats: EpisodeStats,
        skip: set[int] | frozenset[int] = frozenset(),
    ) -> list[int]:
        """Step every env copy but those in ``skip``; close transitions; returns the env copies
        whose episode ended."""
        finals: list[tuple[int, Hashable, Any, bool, bool]] = []  # (env, agent, raw, terminated, truncated)
        next_items: list[tuple[int, Hashable, Any]] = []
        ended: list[tuple[int, bool]] = []
        aborted: list[int] = []
        for index, action_dict in enumerate(actions):
            if index in skip:
                continue
            try:
                obs, rewards, terminateds, truncateds, _ = self._call_env(index, "step", action_dict)
                self._check_finite(
                    index, "reward", [np.asarray(r, dtype=np.float64) for r in rewards.values()]
                )
                self._check_finite(index, "observation", [np.asarray(o) for o in _leaves(obs)])
            except _CopyFailed:
                aborted.append(index)  # its episode ends here, dropped: not reported, cut as truncated
                continue
            self._failures[index] = 0
            episode = self._episodes[index]
            episode.length += 1
            for agent_id, reward in rewards.items():
                episode.agent_returns[agent_id] = episode.agent_returns.get(agent_id, 0.0) + float(reward)
                if agent_id not in episode.mapping:
                    self._policy_for(index, agent_id)
                if record:
                    self.trajectories.reward(index, agent_id, reward)
                    episode.reward(agent_id, reward)
            done_all = bool(terminateds.get(ALL, False) or truncateds.get(ALL, False))
            # In the env's order (a set's order changes with the process's string hash seed, and
            # with it the batch's order: runs with the same seeds learned differently).
            for agent_id in dict.fromkeys([*terminateds, *truncateds]):
                if agent_id == ALL:
                    continue
                term, trunc = bool(terminateds.get(agent_id, False)), bool(truncateds.get(agent_id, False))
                if term or trunc:
                    finals.append((index, agent_id, obs.get(agent_id), term, trunc))
            finished = {f[1] for f in finals if f[0] == index}
            if done_all:
                for agent_id, agent_obs in obs.items():
                    if agent_id not in finished:
                        finals.append(
                            (index, agent_id, agent_obs, bool(terminateds.get(ALL)), not terminateds.get(ALL))
                        )
                ended.append((index, bool(terminateds.get(ALL, False))))
            else:
                next_items += [(index, a, o) for a, o in obs.items() if a not in finished]
            if record and self._track_episodes:
                self._step_episode(index, obs, finals, done_all, bool(terminateds.get(ALL, False)))
        if record:
            with_obs = [(i, a, raw) for i, a, raw, _, _ in finals if raw is not None]
            module_finals = dict(
                zip([(i, a) for i, a, _ in with_obs], self._to_module(with_obs, update), strict=True)
            )
            for index, agent_id, _, term, trunc in finals:
                self.trajectories.finish(index, agent_id, module_finals.get((index, agent_id)), term, trunc)
            for index, terminated in ended:
                self.trajectories.end_episode(index, terminated, {})
        module_next = self._to_module(next_items, update)
        self._acting = [{} for _ in self.envs]
        for (index, agent_id, _), module_obs in zip(next_items, module_next, strict=True):
            if record:
                self.trajectories.observe(index, agent_id, module_obs)
            self._acting[index][agent_id] = module_obs
        for index, _ in ended:
            self._record_episode(index, stats)
            if record and self._track_episodes:
                self._episode_hook("on_episode_end", self._episodes[index])
                self._finished_episodes.append(self._episodes[index])
        for index in aborted:
            if record:
                self.trajectories.end_episode(index, False, {})
            self._num_dropped += 1
            self._reset(index, update, record)
        return [index for index, _ in ended]

    def _step_episode(
        self, index: int, obs: dict, finals: list[tuple], done_all: bool, terminated: bool
    ) -> None:
        """Record one env step in the episode RLlib callbacks see, then ``on_episode_step``."""
        episode = self._episodes[index]
        finished = set()
        for env_index, agent_id, final_obs, term, trunc in finals:
            if env_index == index:
                episode.finish_agent(agent_id, final_obs, term, trunc)
                finished.add(agent_id)
        for agent_id, agent_obs in obs.items():
            if agent_id not in finished:
                episode.observe(agent_id, agent_obs)
        if done_all:
            episode.end(terminated)
        self._episode_hook("on_episode_step", episode)

    def _record_episode(self, index: int, stats: EpisodeStats) -> None:
        episode = self._episodes[index]
        stats.returns.append(float(sum(episode.agent_returns.values())))
        stats.lengths.append(episode.length)
        stats.agent_returns.append({str(a): r for a, r in episode.agent_returns.items()})
        policy_returns: dict[str, float] = {}
        for agent_id, ret in episode.agent_returns.items():
            policy_id = episode.mapping[agent_id]
            policy_returns[policy_id] = policy_returns.get(policy_id, 0.0) + ret
        stats.policy_returns.append(policy_returns)

    def sample(
        self, num_steps: int, explore: bool = True, state: dict[str, Any] | None = None
    ) -> RunnerResult:
        """Step every env copy ``num_steps`` times; return the closed transitions per policy."""
        self.set_state(state)
        with self._bounded("sample"):
            return self._sample(num_steps, explore)

    @contextlib.contextmanager
    def _bounded(self, method: str) -> Iterator[None]:
        """``sample_timeout_s`` per env call of an in-process runner (Ray's group bounds actors)."""
        seconds = self.spec.sample_timeout_s if self.spec.num_workers == 0 else None
        try:
            with CallDeadline(seconds) as deadline:
                self._deadline = deadline
                yield
        except EnvCallTimeout as exc:  # a hung env call that could not be absorbed
            raise EnvError(
                f"{method}() of env {self.spec.env_creator.name!r} on env runner {self.worker_index}: {exc}."
            ) from None
        finally:
            self._deadline = None

    def _pop_counters(self, stats: EpisodeStats) -> None:
        stats.num_env_restarts, stats.num_episodes_dropped = self._num_restarts, self._num_dropped
        self._num_restarts = self._num_dropped = 0

    def _sample(self, num_steps: int, explore: bool) -> RunnerResult:
        update = self.spec.update_connectors
        if self._acting is None:
            self._reset_all(update)
        start = time.perf_counter()
        stats = EpisodeStats()
        with torch.no_grad():
            for _ in range(int(num_steps)):
                actions = self._act(explore, record=True)
                for index in self._step_all(actions, update, record=True, stats=stats):
                    self._reset(index, update)
        stats.num_env_steps = int(num_steps) * len(self.envs)
        if self.callbacks is not None:
            self.callbacks.call(
                "on_sample_end", env_runner=self, metrics_logger=self.metrics, samples=self._finished_episodes
            )
            self._finished_episodes = []
            stats.custom_metrics = self.metrics.pop()
        data, agent_steps = _segments_to_batches(self.trajectories.pop_completed())
        stats.num_agent_steps = agent_steps
        stats.seconds = time.perf_counter() - start
        self._pop_counters(stats)
        return RunnerResult(data, stats, self._pop_deltas(), self.weights_version, self.worker_index)

    def evaluate(
        self,
        duration: int | EvaluationRequest,
        explore: bool = False,
        state: dict[str, Any] | None = None,
    ) -> RunnerResult:
        """Fresh evaluation episodes: ``duration`` episodes (an int) or an
        :class:`EvaluationRequest` (episodes or env steps, with a time limit); no transitions
        kept (a dropped episode does not count towards the quota)."""
        self.set_state(state)
        with self._bounded("evaluate"):
            return self._evaluate(EvaluationRequest.of(duration), explore)

    def _evaluate(self, request: EvaluationRequest, explore: bool) -> RunnerResult:
        update = self.spec.update_connectors
        start = time.perf_counter()
        self._reset_all(update, record=False)
        budget = EvaluationBudget(request, len(self.envs))
        stats = EpisodeStats()
        # Dropped episodes do not count towards the quota: bound them, or copies that keep
        # failing would keep evaluation going forever.
        max_dropped, dropped_before = max(10, 2 * request.num), self._num_dropped
        # A copy whose episodes are all counted would only play episodes that do not count
        # while the others finish theirs: it is left alone (not reset, not stepped) instead.
        paused: set[int] = set()
        try:
            with torch.no_grad():
                while budget.keep_going():
                    if self._num_dropped - dropped_before > max_dropped:
                        raise EnvError(
                            f"evaluate() on env runner {self.worker_index} could not finish {request.num} "
                            f"{request.unit}: {self._num_dropped - dropped_before} episodes were dropped "
                            f"because env copies failed. Last failure: {self._last_failure}"
                        )
                    actions = self._act(explore, record=False)
                    finished = EpisodeStats()
                    ended = self._step_all(actions, update, record=False, stats=finished, skip=paused)
                    budget.step()
                    for k, index in enumerate(ended):
                        if budget.counts(index):
                            stats.returns.append(finished.returns[k])
                            stats.lengths.append(finished.lengths[k])
                            stats.agent_returns.append(finished.agent_returns[k])
                            stats.policy_returns.append(finished.policy_returns[k])
                        if budget.finished(index):
                            paused.add(index)
                        else:
                            self._reset(index, update, record=False)
        finally:
            # Training must not continue evaluation episodes, not even after a failed evaluation.
            self._acting = None
        stats.num_env_steps = budget.num_env_steps
        stats.num_episodes_cut = budget.num_episodes_cut
        stats.seconds = time.perf_counter() - start
        self._pop_counters(stats)
        return RunnerResult(None, stats, self._pop_deltas(), self.weights_version, self.worker_index)

    def _pop_deltas(self) -> dict[str, list[dict[str, Any] | None]]:
        return {policy_id: pipeline.pop_deltas() for policy_id, pipeline in self.env_to_module.items()}

    def stop(self) -> None:
        for env in self.envs:
            env.close()


def _leaves(tree: Any) -> list[Any]:
    """The arrays of an agent-keyed observation dict (nested dicts/tuples flattened)."""
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    if isinstance(tree, tuple | list):
        return [leaf for value in tree for leaf in _leaves(value)]
    return [tree]


def _segments_to_batches(segments: list[CompletedSegment]) -> tuple[dict[str, dict[str, Any]], int]:
    """Closed transitions -> per policy flat nested dicts ``[M]`` in torchrl's key layout."""
    per_policy: dict[str, list] = {}
    for segment in segments:
        per_policy.setdefault(segment.policy_id, []).extend(segment.transitions)
    batches: dict[str, dict[str, Any]] = {}
    agent_steps = 0
    for policy_id, transitions in per_policy.items():
        agent_steps += len(transitions)
        terminated = torch.tensor([[t.terminated] for t in transitions])
        truncated = torch.tensor([[t.truncated] for t in transitions])
        batches[policy_id] = transitions_to_batch(transitions, terminated, truncated)
    return batches, agent_steps
