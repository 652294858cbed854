"""The single-agent EnvRunner: env copies + connectors + an inference-only policy copy.

The hot loop is one vector-env step and one batched policy forward per time step, writing
into buffers allocated once per ``sample`` call; there is no per-env Python loop except over
env copies whose episode just ended. The runner imports neither Lightning nor tensordict
(both slow to import), so a Ray actor starts fast; it returns plain nested dicts of tensors in
torchrl's key layout, which the driver wraps into TensorDicts without copying.
"""

from __future__ import annotations

import time
import types
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lightning_rl._tree import map_structure, stack_structures, to_torch, tree_row
from lightning_rl.connectors.base import ConnectorSpec, EnvToModulePipeline, ModuleToEnvPipeline
from lightning_rl.constants import DEFAULT_POLICY_ID
from lightning_rl.env_runners.evaluation_request import EvaluationBudget, EvaluationRequest
from lightning_rl.env_runners.rllib_callbacks import (
    EPISODE_HOOKS,
    CallbackSettings,
    MetricsLogger,
    RunnerEpisode,
)
from lightning_rl.env_runners.rllib_env_runner import RLlibEnvRunnerView, RunnerViewSettings
from lightning_rl.envs.registration import EnvContext, EnvCreator
from lightning_rl.envs.vector import CallDeadline, EnvCallTimeout, make_vector_env
from lightning_rl.errors import EnvError
from lightning_rl.modules.policy_networks import PolicySpec


@dataclass
class EnvRunnerSpec:
    """Everything an EnvRunner needs, as plain picklable data (sent once to each actor)."""

    env_creator: EnvCreator
    policy_spec: PolicySpec
    env_config: dict = field(default_factory=dict)
    num_envs: int = 1
    env_to_module: list[ConnectorSpec] = field(default_factory=list)
    module_to_env: list[ConnectorSpec] = field(default_factory=list)
    seed: int | None = None
    num_workers: int = 0
    torch_threads: int | None = None
    # Evaluation runners keep connector statistics frozen.
    update_connectors: bool = True
    # Which entry of the learner's per-policy state this runner's policy is.
    policy_id: str = DEFAULT_POLICY_ID
    # Episode recording (``output=``): a picklable recipe with
    # ``build(observation_space, action_space, num_envs, worker_index)`` returning the recorder
    # (lightning_rl.offline.RecordingSpec); None records nothing and costs nothing per step.
    recorder: Any = None
    # Env copies that raise (or hang) are rebuilt alone, their episode dropped (RLlib's
    # restart_failed_sub_environments); a copy failing this many times in a row is an error.
    restart_failed_sub_environments: bool = True
    max_consecutive_sub_environment_failures: int = 10
    # Non-finite rewards/observations: "error" (naming the env) or "drop_episode".
    on_non_finite_env_output: str = "error"
    # The longest one env call (reset, step, rebuild) of an in-process runner may take
    # (num_workers == 0; Ray runners are bounded by their group): a copy whose call hangs
    # longer is rebuilt like one that raised.
    sample_timeout_s: float | None = None
    # RLlib callbacks (``config.callbacks(...)``); None costs nothing per step.
    callbacks: CallbackSettings | None = None
    # How the RLlib-style view that ``foreach_env_runner`` functions get samples.
    rllib_view: RunnerViewSettings = field(default_factory=RunnerViewSettings)

    @staticmethod
    def runner_class() -> type:
        return EnvRunner


@dataclass
class EpisodeStats:
    """Episodes that finished during one ``sample``/``evaluate`` call, plus step counts."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    num_env_steps: int = 0
    seconds: float = 0.0
    # Multi-agent runners: one dict per finished episode, and agent steps sampled.
    agent_returns: list[dict[str, float]] = field(default_factory=list)
    policy_returns: list[dict[str, float]] = field(default_factory=list)
    num_agent_steps: int = 0
    # Env copies rebuilt after raising or hanging, and episodes dropped (crash or non-finite output).
    num_env_restarts: int = 0
    num_episodes_dropped: int = 0
    # What RLlib callbacks logged with ``metrics_logger.log_value`` (MetricsLogger.pop()).
    custom_metrics: dict[str, Any] = field(default_factory=dict)
    # Evaluation: running episodes cut because evaluation_sample_timeout_s ran out.
    num_episodes_cut: int = 0


@dataclass
class RunnerResult:
    """One runner's sample: data (``[num_envs, T]`` nested dict), episode stats, filter deltas."""

    data: dict[str, Any] | None
    stats: EpisodeStats
    # {policy_id: one delta per env-to-module connector (None when it learned nothing)}
    connector_deltas: dict[str, list[dict[str, Any] | None]]
    weights_version: int
    worker_index: int


class EnvRunner:
    """Samples fixed-length fragments ``[num_envs, T]`` or whole evaluation episodes."""

    def __init__(self, spec: EnvRunnerSpec, worker_index: int = 0, recreated: bool = False) -> None:
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
        self.env = make_vector_env(
            spec.env_creator,
            context,
            spec.num_envs,
            restart_failed=spec.restart_failed_sub_environments,
            max_consecutive_failures=spec.max_consecutive_sub_environment_failures,
            on_non_finite=spec.on_non_finite_env_output,
            where=f" on env runner {worker_index}",
        )
        self.num_envs = spec.num_envs
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self.env_to_module = EnvToModulePipeline.from_specs(
            spec.env_to_module, self.observation_space, self.action_space
        )
        self.module_to_env = ModuleToEnvPipeline.from_specs(spec.module_to_env, self.action_space)
        self.policy = spec.policy_spec.build()
        self.generator = torch.Generator()
        if spec.seed is not None:
            self.generator.manual_seed(int(spec.seed))
        self.weights_version = -1
        self._discrete_start = (
            int(self.action_space.start) if isinstance(self.action_space, spaces.Discrete) else 0
        )
        self._obs: Any = None  # module-side observation of the current step, per env copy
        self._episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        # True where the current observation starts an episode (torchrl's "is_init"): recurrent
        # models reset their state there when sequences are replayed on the learner.
        self._is_init = np.ones(self.num_envs, dtype=bool)
        self._seeded = False
        self.recorder = (
            spec.recorder.build(self.observation_space, self.action_space, self.num_envs, worker_index)
            if spec.recorder is not None
            else None
        )
        # RLlib callbacks: built here (one object per runner process). Episode objects are kept
        # only when an episode hook is overridden, so runners without callbacks pay nothing.
        self.callbacks = spec.callbacks.build() if spec.callbacks is not None else None
        self.metrics = MetricsLogger()
        self._track_episodes = self.callbacks is not None and self.callbacks.has(*EPISODE_HOOKS)
        self._episodes: list[RunnerEpisode] = []
        self._finished_episodes: list[RunnerEpisode] = []
        self._episode_counter = 0
        self._rllib_view: RLlibEnvRunnerView | None = None

    # -- state from the learner --------------------------------------------------------------
    def set_state(self, state: dict[str, Any] | None) -> None:
        """Load the learner's ``{"version", "policies": {id: {weights, extra}}, "connectors"}``."""
        if not state:
            return
        policy_state = state.get("policies", {}).get(self.spec.policy_id)
        if policy_state is not None:
            if policy_state.get("weights") is not None and state.get("version", 0) != self.weights_version:
                self.policy.load_weights(policy_state["weights"])
                self.weights_version = int(state.get("version", 0))
            if policy_state.get("extra"):
                self.policy.set_extra(policy_state["extra"])
        connectors = state.get("connectors", {}).get(self.spec.policy_id)
        if connectors is not None:
            self.env_to_module.set_state(connectors)

    def ping(self) -> str:
        return "pong"

    def apply(self, func: Any, kwargs: dict[str, Any] | None = None) -> Any:
        """``func(view, **kwargs)``: what ``EnvRunnerGroup.foreach_env_runner`` runs here, with
        the runner as RLlib's EnvRunner shows itself (:class:`RLlibEnvRunnerView`: RLlib's
        ``sample()``, ``get_metrics()``, ``worker_index``; everything else is this runner's).
        A generator ``func`` returns is run here into a list (Ray runs one returned by an
        actor too; RLlib's examples return one from their env-changing lambdas)."""
        if self._rllib_view is None:
            self._rllib_view = RLlibEnvRunnerView(self, self.spec.rllib_view)
        out = func(self._rllib_view, **(kwargs or {}))
        return list(out) if isinstance(out, types.GeneratorType) else out

    def get_spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.observation_space, self.action_space

    # -- env helpers -------------------------------------------------------------------------
    def _deadline(self) -> CallDeadline:
        """``sample_timeout_s`` per env call of an in-process runner (Ray's group bounds actors)."""
        deadline = CallDeadline(self.spec.sample_timeout_s if self.spec.num_workers == 0 else None)
        self.env.deadline = deadline
        return deadline

    def _call_env(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.env, method)(*args, **kwargs)
        except EnvError:
            raise
        except EnvCallTimeout as exc:
            raise EnvError(
                f"Env {self.spec.env_creator.name!r} on env runner {self.worker_index}: {method}() {exc}."
            ) from None
        except Exception as exc:
            raise EnvError(
                f"Env {self.spec.env_creator.name!r} raised in {method}() on env runner {self.worker_index}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _reset_all(self, evaluation: bool = False) -> Any:
        seed = None
        if not self._seeded and self.spec.seed is not None:
            seed = int(self.spec.seed)
        self._seeded = True
        raw, _ = self._call_env("reset", seed=seed)
        if self.recorder is not None:
            self.recorder.start_episodes(raw)
        self.env_to_module.reset(self.num_envs)
        reset_policy_state(self.policy, self.num_envs)
        all_ids = torch.arange(self.num_envs)
        self.env_to_module.episode_start(all_ids)
        start_policy_episodes(self.policy, all_ids)
        self._obs = self.env_to_module(to_torch(raw), update=self.spec.update_connectors)
        if self._track_episodes and not evaluation:  # evaluation episodes are not reported
            self._episodes = [None] * self.num_envs  # type: ignore[list-item]
            self._start_episodes(range(self.num_envs), raw)
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self._is_init[:] = True
        return raw

    def _env_actions(self, actions: torch.Tensor) -> np.ndarray:
        return to_env_actions(self.module_to_env, actions, self._discrete_start)

    # -- sampling ----------------------------------------------------------------------------
    def sample(
        self, num_steps: int, explore: bool = True, state: dict[str, Any] | None = None
    ) -> RunnerResult:
        """Step every env copy ``num_steps`` times; episodes carry over between calls."""
        self.set_state(state)
        try:
            with self._deadline():
                return self._sample(num_steps, explore)
        except EnvCallTimeout as exc:  # a hung env call the vector env could not absorb
            raise EnvError(
                f"sample() of env {self.spec.env_creator.name!r} on env runner {self.worker_index}: {exc}."
            ) from None

    def _sample(self, num_steps: int, explore: bool) -> RunnerResult:
        if self._obs is None:
            self._reset_all()
        start = time.perf_counter()
        n, steps = self.num_envs, int(num_steps)
        update = self.spec.update_connectors
        stats = EpisodeStats()

        def alloc(like: torch.Tensor) -> torch.Tensor:
            return torch.empty((n, steps, *like.shape[1:]), dtype=like.dtype)

        obs_buf = map_structure(alloc, self._obs)
        next_buf = map_structure(alloc, self._obs)
        # Per-step scalars go to numpy rows and the policy's outputs to a list, both turned into
        # [n, steps, ...] tensors once at the end: a torch index-assignment per step and key
        # costs several microseconds, which is most of a one-env step's bookkeeping.
        reward_rows = np.empty((steps, n), dtype=np.float32)
        terminated_rows = np.empty((steps, n), dtype=bool)
        truncated_rows = np.empty((steps, n), dtype=bool)
        init_rows = np.empty((steps, n), dtype=bool)
        outs: list[dict[str, torch.Tensor]] = []
        obs = self._obs
        structured = isinstance(obs, dict | tuple)
        recorder = self.recorder
        with torch.no_grad():
            for t in range(steps):
                out = self.policy(obs, explore, self.generator)
                outs.append(out)
                if structured:
                    _write(obs_buf, obs, t)
                else:
                    obs_buf[:, t] = obs
                actions = out["action"]
                env_actions = self._env_actions(actions)
                raw, reward, terminated, truncated, info = self._call_env("step", env_actions)
                if recorder is not None:
                    recorder.record_step(env_actions, out, reward, terminated, truncated, raw, info)
                reward_rows[t] = reward
                init_rows[t] = self._is_init
                terminated_rows[t] = terminated
                truncated_rows[t] = truncated
                self.env_to_module.record_step(actions, torch.from_numpy(reward_rows[t]))
                done = np.logical_or(terminated, truncated)
                if self._track_episodes:
                    self._step_episodes(env_actions, raw, reward, terminated, truncated, info)
                self._is_init[:] = done
                self._episode_return += reward
                self._episode_length += 1
                any_done = bool(done.any())
                if any_done:
                    aborted = self.env.aborted
                    ended_ids = np.flatnonzero(done & ~aborted)
                    ids = torch.from_numpy(ended_ids)
                    if len(ended_ids):
                        final_raw = stack_structures([info["final_obs"][i] for i in ended_ids])
                        final_obs = self.env_to_module(to_torch(final_raw), env_ids=ids, update=update)
                    all_ids = torch.from_numpy(np.flatnonzero(done))
                    self.env_to_module.episode_start(all_ids)
                    start_policy_episodes(self.policy, all_ids)
                    self._finish_episodes(ended_ids, stats)
                    if self._track_episodes:
                        self._start_episodes(np.flatnonzero(done), raw)
                    # A dropped episode is not reported; its aborted step loops back to the
                    # observation it acted on (finite), cut as truncated.
                    dropped = np.flatnonzero(aborted)
                    self._drop_episodes(dropped, stats)
                obs_now = obs
                obs = self.env_to_module(to_torch(raw), update=update)
                if structured:
                    _write(next_buf, obs, t)
                    if any_done:
                        if len(ended_ids):
                            _write_rows(next_buf, final_obs, ids, t)
                        if len(dropped):
                            rows = torch.from_numpy(dropped)
                            _write_rows(next_buf, map_structure(lambda x, r=rows: x[r], obs_now), rows, t)
                else:
                    next_buf[:, t] = obs
                    if any_done:
                        if len(ended_ids):
                            next_buf[ids, t] = final_obs
                        if len(dropped):
                            rows = torch.from_numpy(dropped)
                            next_buf[rows, t] = obs_now[rows]
        self._obs = obs
        stats.num_env_restarts, _ = self.env.pop_counters()
        if recorder is not None:
            recorder.end_fragment()
        stats.num_env_steps = n * steps
        if self.callbacks is not None:
            self.callbacks.call(
                "on_sample_end", env_runner=self, metrics_logger=self.metrics, samples=self._finished_episodes
            )
            self._finished_episodes = []
            stats.custom_metrics = self.metrics.pop()
        stats.seconds = time.perf_counter() - start
        terminated_buf = _per_env(terminated_rows)
        truncated_buf = _per_env(truncated_rows)
        data = {
            "observation": obs_buf,
            "is_init": _per_env(init_rows),
            **{key: torch.stack([out[key] for out in outs], dim=1) for key in (outs[0] if outs else ())},
            "next": {
                "observation": next_buf,
                "reward": _per_env(reward_rows),
                "terminated": terminated_buf,
                "truncated": truncated_buf,
                "done": terminated_buf | truncated_buf,
            },
        }
        return RunnerResult(data, stats, self._pop_deltas(), self.weights_version, self.worker_index)

    def _pop_deltas(self) -> dict[str, list[dict[str, Any] | None]]:
        return {self.spec.policy_id: self.env_to_module.pop_deltas()}

    def _drop_episodes(self, ids: np.ndarray, stats: EpisodeStats) -> None:
        stats.num_episodes_dropped += len(ids)
        self._episode_return[ids] = 0.0
        self._episode_length[ids] = 0

    def _finish_episodes(self, done_ids: np.ndarray, stats: EpisodeStats) -> None:
        for i in done_ids:
            stats.returns.append(float(self._episode_return[i]))
            stats.lengths.append(int(self._episode_length[i]))
            if self._track_episodes:
                self._episode_hook("on_episode_end", self._episodes[i])
                self._finished_episodes.append(self._episodes[i])
        self._episode_return[done_ids] = 0.0
        self._episode_length[done_ids] = 0

    # -- RLlib callbacks (only with an episode hook) ----------------------------------------
    def _episode_hook(self, name: str, episode: RunnerEpisode) -> None:
        self.callbacks.call(  # type: ignore[union-attr]
            name,
            episode=episode,
            env_runner=self,
            metrics_logger=self.metrics,
            env=self.env,
            env_index=episode.env_index,
            rl_module=self.policy,
        )

    def _start_episodes(self, env_ids: Any, raw: Any) -> None:
        for i in env_ids:
            self._episode_counter += 1
            episode = RunnerEpisode(
                self.worker_index * 1_000_000_000 + self._episode_counter, int(i), tree_row(raw, int(i))
            )
            self._episodes[i] = episode
            self._episode_hook("on_episode_start", episode)

    def _step_episodes(
        self, actions: np.ndarray, raw: Any, reward: Any, terminated: Any, truncated: Any, info: dict
    ) -> None:
        """Append one step to each copy's episode (its final observation where it ended) and
        call ``on_episode_step``; episodes of crashed copies are dropped unreported."""
        aborted = self.env.aborted
        for i, episode in enumerate(self._episodes):
            if aborted[i]:
                continue
            ended = bool(terminated[i] or truncated[i])
            obs = info["final_obs"][i] if ended else tree_row(raw, i)
            episode.add_step(obs, actions[i], reward[i], terminated[i], truncated[i])
            self._episode_hook("on_episode_step", episode)

    def evaluate(
        self,
        duration: int | EvaluationRequest,
        explore: bool = False,
        state: dict[str, Any] | None = None,
    ) -> RunnerResult:
        """Run fresh evaluation episodes: ``duration`` episodes (an int) or an
        :class:`EvaluationRequest` (episodes or env steps, with a time limit).

        Episodes are spread evenly over the env copies (see :class:`EvaluationBudget`); a
        dropped episode (its copy crashed or gave a non-finite value) does not count. When the
        request's ``timeout_s`` runs out the call returns what finished and counts the running
        episodes in ``stats.num_episodes_cut``.
        """
        self.set_state(state)
        request = EvaluationRequest.of(duration)
        try:
            with self._deadline():
                return self._evaluate(request, explore)
        except EnvCallTimeout as exc:
            raise EnvError(
                f"evaluate() of env {self.spec.env_creator.name!r} on env runner {self.worker_index}: {exc}."
            ) from None

    def _evaluate(self, request: EvaluationRequest, explore: bool) -> RunnerResult:
        start = time.perf_counter()
        self._reset_all(evaluation=True)
        budget = EvaluationBudget(request, self.num_envs)
        stats = EpisodeStats()
        update = self.spec.update_connectors
        # A copy whose episodes are all counted would only play episodes that do not count
        # while the others finish theirs: the vector env stops stepping it instead.
        paused = self.env.paused  # make_vector_env always builds a ResilientVectorEnv
        obs = self._obs
        try:
            with torch.no_grad():
                while budget.keep_going():
                    out = self.policy(obs, explore, self.generator)
                    raw, reward, terminated, truncated, _info = self._call_env(
                        "step", self._env_actions(out["action"])
                    )
                    reward = np.asarray(reward, dtype=np.float64)
                    self.env_to_module.record_step(out["action"], torch.from_numpy(reward.astype(np.float32)))
                    self._episode_return += reward
                    self._episode_length += 1
                    budget.step()
                    done = np.logical_or(terminated, truncated)
                    if done.any():
                        done_ids = np.flatnonzero(done)
                        self._count_evaluation_episodes(done_ids, budget, stats, request)
                        paused[done_ids] |= budget.finished(done_ids)
                    obs = self.env_to_module(to_torch(raw), update=update)
        finally:
            # The next training-style sample() must not continue these evaluation episodes
            # (it resets every copy, and no copy stays paused).
            self._obs = None
            paused[:] = False
        stats.num_env_steps = budget.num_env_steps
        stats.num_episodes_cut = budget.num_episodes_cut
        stats.num_env_restarts, _ = self.env.pop_counters()
        stats.seconds = time.perf_counter() - start
        return RunnerResult(None, stats, self._pop_deltas(), self.weights_version, self.worker_index)

    def _count_evaluation_episodes(
        self, done_ids: np.ndarray, budget: EvaluationBudget, stats: EpisodeStats, request: EvaluationRequest
    ) -> None:
        """Record the evaluation episodes that ended in ``done_ids`` (those the budget counts)
        and start the copies' next ones; too many dropped episodes end the evaluation."""
        stats.num_episodes_dropped += int(self.env.aborted.sum())
        # Dropped episodes do not count towards the quota; an env whose copies keep failing
        # would otherwise keep evaluation going forever.
        if stats.num_episodes_dropped > max(10, 2 * request.num):
            raise EnvError(
                f"evaluate() of env {self.spec.env_creator.name!r} on env runner "
                f"{self.worker_index} could not finish {request.num} {request.unit}: "
                f"{stats.num_episodes_dropped} episodes were dropped because env copies "
                f"failed. Last failure: {self.env.last_failure}"
            )
        for i in done_ids:
            if not self.env.aborted[i] and budget.counts(int(i)):
                stats.returns.append(float(self._episode_return[i]))
                stats.lengths.append(int(self._episode_length[i]))
        self._episode_return[done_ids] = 0.0
        self._episode_length[done_ids] = 0
        self.env_to_module.episode_start(torch.from_numpy(done_ids))
        start_policy_episodes(self.policy, torch.from_numpy(done_ids))

    def flush_output(self) -> str | None:
        """Publish everything recorded so far as a complete file (running episodes as chunks);
        returns the file's path, or None when nothing is recorded."""
        return self.recorder.flush() if self.recorder is not None else None

    def stop(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        self.env.close()


def reset_policy_state(policy: Any, num_envs: int) -> None:
    """``policy.reset(num_envs)``: recurrent state for ``num_envs`` rows (see :class:`InferencePolicy`;
    duck-typed policies without the hook are stateless)."""
    if hasattr(policy, "reset"):
        policy.reset(num_envs)


def start_policy_episodes(policy: Any, env_ids: torch.Tensor) -> None:
    """``policy.episode_start(env_ids)``: forget the recurrent state of rows starting an episode."""
    if hasattr(policy, "episode_start"):
        policy.episode_start(env_ids)


def to_env_actions(
    module_to_env: ModuleToEnvPipeline, actions: torch.Tensor, discrete_start: int = 0
) -> np.ndarray:
    """Module actions -> what ``env.step`` gets; shared with :class:`~lightning_rl.policy.Policy` so
    inference outside the runners converts actions exactly as sampling did."""
    env_actions = module_to_env(actions) if len(module_to_env) else actions
    env_actions = env_actions.numpy()
    if discrete_start:
        env_actions = env_actions + discrete_start
    return env_actions


def _per_env(rows: np.ndarray) -> torch.Tensor:
    """``[steps, n]`` per-step rows as the ``[n, steps, 1]`` tensor a fragment holds."""
    return torch.from_numpy(np.ascontiguousarray(rows.T)).unsqueeze(-1)


def _write(buffers: Any, values: Any, t: int) -> None:
    if isinstance(buffers, dict):
        for key in buffers:
            _write(buffers[key], values[key], t)
    elif isinstance(buffers, tuple):
        for buf, value in zip(buffers, values, strict=True):
            _write(buf, value, t)
    else:
        buffers[:, t] = values


def _write_rows(buffers: Any, values: Any, rows: torch.Tensor, t: int) -> None:
    if isinstance(buffers, dict):
        for key in buffers:
            _write_rows(buffers[key], values[key], rows, t)
    elif isinstance(buffers, tuple):
        for buf, value in zip(buffers, values, strict=True):
            _write_rows(buf, value, rows, t)
    else:
        buffers[rows, t] = values
