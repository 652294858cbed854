"""RLlib's ``SingleAgentEnvRunner`` surface over an EnvRunner, for code written against RLlib.

``EnvRunnerGroup.foreach_env_runner(func)`` hands ``func`` an :class:`RLlibEnvRunnerView`
of each runner, so a ``custom_evaluation_function`` (or any RLlib snippet) ports unchanged:

* ``sample(num_timesteps=None, num_episodes=None, explore=None, random_actions=False,
  force_reset=False)`` returns a list of episodes (:class:`RunnerEpisode`: ``env_steps()``,
  ``agent_steps()``, ``get_return()``, ``get_observations()`` ...); without arguments, one
  episode per env copy (RLlib's evaluation runners' ``complete_episodes`` batch mode);
* ``get_metrics()`` returns what the samples logged (episode returns and lengths, step and
  episode counts, callbacks' values) as :class:`~.metrics_logger.Stats` payloads for the
  driver's ``algorithm.metrics.merge_and_log_n_dicts``;
* ``worker_index`` is RLlib's (1..N for the group's actors, 0 for an in-process runner),
  ``env`` the vector env (``env.unwrapped.envs``), ``module`` the runner's policy; every other
  attribute is the runner's own.

The runner's own ``sample(num_steps)`` (fixed-length fragments, the data path) is untouched;
the view drives the same env copies, connectors and policy step by step, keeping Python
episode objects (a custom evaluation's few episodes, never the training hot loop). Episodes do
not carry over between the view's calls, nor into the runner's next fragment. Every call is
bounded by ``sample_timeout_s``: an episode that never ends is cut (``num_episodes_cut``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lightning_rl._tree import to_torch, tree_row
from lightning_rl.env_runners.metrics_logger import MetricsLogger, nest
from lightning_rl.env_runners.rllib_callbacks import RunnerEpisode
from lightning_rl.envs.vector import EnvCallTimeout
from lightning_rl.errors import ConfigError, EnvError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerViewSettings:
    """How the RLlib view of a runner samples (set per runner group, sent with the spec).

    Args:
        sample_timeout_s: the longest one ``sample()`` call may run (None: no limit).
        smoothing_window: window of the episode return/length metrics (None: the episodes
            since the driver's last ``reduce``, as lightning-rl reports each evaluation).
        worker_index_offset: subtracted from the runner's index to give RLlib's ``worker_index``.
        explore: what ``explore=None`` means (evaluation runners: the evaluation setting).
        default_num_timesteps: what ``sample()`` without arguments samples per call (None: one
            episode per env copy).
    """

    sample_timeout_s: float | None = 120.0
    smoothing_window: int | None = 100
    worker_index_offset: int = 0
    explore: bool = True
    default_num_timesteps: int | None = None


class RLlibEnvRunnerView:
    """One runner as RLlib's ``SingleAgentEnvRunner`` shows itself (see the module docstring)."""

    def __init__(self, runner: Any, settings: RunnerViewSettings | None = None) -> None:
        self._runner = runner
        self._settings = settings or RunnerViewSettings()
        self.metrics = MetricsLogger()

    # -- RLlib's attributes ------------------------------------------------------------------
    @property
    def worker_index(self) -> int:
        return int(self._runner.worker_index) - self._settings.worker_index_offset

    @property
    def env(self) -> Any:
        return self._runner.env

    @property
    def module(self) -> Any:
        return self._runner.policy

    @property
    def num_envs(self) -> int:
        return int(self._runner.num_envs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_runner", "_settings"):
            raise AttributeError(name)
        return getattr(self._runner, name)

    # -- sampling ----------------------------------------------------------------------------
    def sample(
        self,
        *,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool | None = None,
        random_actions: bool = False,
        force_reset: bool = False,
        **_: Any,
    ) -> list[RunnerEpisode]:
        """Fresh episodes: ``num_episodes`` finished ones, or ``num_timesteps`` env steps
        (finished episodes plus the running ones' chunks); neither: one episode per env copy
        (or ``default_num_timesteps``). ``force_reset`` is always the case here."""
        del force_reset  # every call starts fresh episodes
        if num_timesteps is not None and num_episodes is not None:
            raise ConfigError("sample() takes num_timesteps or num_episodes, not both.")
        for name, value in (("num_timesteps", num_timesteps), ("num_episodes", num_episodes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"sample({name}=...) must be a positive int, got {value!r}.")
        if num_timesteps is None and num_episodes is None:
            num_timesteps = self._settings.default_num_timesteps
            num_episodes = None if num_timesteps is not None else self.num_envs
        explore = self._settings.explore if explore is None else bool(explore)
        runner = self._runner
        try:
            with runner._deadline():
                return self._sample(num_timesteps, num_episodes, explore, random_actions)
        except EnvCallTimeout as exc:  # a hung env call of an in-process runner
            raise EnvError(
                f"sample() of env {runner.spec.env_creator.name!r} on env runner {self.worker_index}: {exc}."
            ) from None

    def _sample(
        self, num_timesteps: int | None, num_episodes: int | None, explore: bool, random_actions: bool
    ) -> list[RunnerEpisode]:
        runner = self._runner
        n = self.num_envs
        start = time.perf_counter()
        timeout = self._settings.sample_timeout_s
        update = runner.spec.update_connectors
        raw = runner._reset_all(evaluation=True)
        obs = runner._obs
        running = [self._new_episode(i, raw) for i in range(n)]
        finished: list[RunnerEpisode] = []
        steps = dropped = 0
        timed_out = False
        try:
            with torch.no_grad():
                while True:
                    if num_episodes is not None and len(finished) >= num_episodes:
                        break
                    if num_timesteps is not None and steps >= num_timesteps:
                        break
                    if timeout is not None and time.perf_counter() - start > timeout:
                        timed_out = True
                        break
                    out = runner.policy(obs, explore, runner.generator)
                    actions = out["action"]
                    if random_actions:
                        env_actions = np.stack([runner.action_space.sample() for _ in range(n)])
                    else:
                        env_actions = runner._env_actions(actions)
                    raw, reward, terminated, truncated, info = runner._call_env("step", env_actions)
                    reward = np.asarray(reward, dtype=np.float64)
                    runner.env_to_module.record_step(actions, torch.from_numpy(reward.astype(np.float32)))
                    steps += n
                    done = np.logical_or(terminated, truncated)
                    aborted = runner.env.aborted
                    for i in range(n):
                        if aborted[i]:  # a crashed copy: its episode is dropped unreported
                            dropped += 1
                        else:
                            final = info["final_obs"][i] if done[i] else tree_row(raw, i)
                            running[i].add_step(final, env_actions[i], reward[i], terminated[i], truncated[i])
                            if done[i]:
                                finished.append(running[i])
                        if done[i]:
                            running[i] = self._new_episode(i, raw)
                    if done.any():
                        ids = torch.from_numpy(np.flatnonzero(done))
                        runner.env_to_module.episode_start(ids)
                        if hasattr(runner.policy, "episode_start"):
                            runner.policy.episode_start(ids)
                    obs = runner.env_to_module(to_torch(raw), update=update)
        finally:
            runner._obs = None  # the runner's next fragment starts fresh episodes
        cut = [e for e in running if e.get_length()]
        if num_episodes is not None:
            finished = finished[:num_episodes]
        episodes = finished if num_episodes is not None else finished + cut
        if timed_out:
            log.warning(
                "EnvRunner %d: sample() stopped at its time limit (%s s) with %d finished episode(s); "
                "%d running episode(s) were cut (num_episodes_cut).",
                self.worker_index,
                timeout,
                len(finished),
                len(cut),
            )
        self._log_metrics(finished, steps, len(cut) if timed_out else 0, dropped, time.perf_counter() - start)
        return episodes

    def _new_episode(self, env_index: int, raw: Any) -> RunnerEpisode:
        runner = self._runner
        runner._episode_counter += 1
        episode_id = int(runner.worker_index) * 1_000_000_000 + runner._episode_counter
        return RunnerEpisode(episode_id, env_index, tree_row(raw, env_index))

    def _log_metrics(
        self, finished: list[RunnerEpisode], steps: int, cut: int, dropped: int, seconds: float
    ) -> None:
        m, window = self.metrics, self._settings.smoothing_window
        for episode in finished:
            ret, length = episode.get_return(), episode.get_length()
            for name, value in (("episode_return", ret), ("episode_len", length)):
                m.log_value(f"{name}_mean", value, reduce="mean", window=window)
                m.log_value(f"{name}_max", value, reduce="max", window=window)
                m.log_value(f"{name}_min", value, reduce="min", window=window)
        counts = {
            "num_episodes": len(finished),
            "num_env_steps_sampled": steps,
            "num_agent_steps_sampled": steps,
            "num_episodes_cut": cut,
            "num_episodes_dropped": dropped,
        }
        for name, value in counts.items():
            m.log_value(name, value, reduce="sum", clear_on_reduce=True)
        m.log_value("num_env_steps_sampled_lifetime", steps, reduce="sum")
        m.log_value("num_episodes_lifetime", len(finished), reduce="sum")
        m.log_value("sample_seconds", seconds, reduce="mean")

    def get_metrics(self) -> dict[str, Any]:
        """What was logged since the last call (the samples' and the callbacks'), as nested
        :class:`~.metrics_logger.Stats` for ``algorithm.metrics.merge_and_log_n_dicts``."""
        payload = self.metrics.pop()
        callbacks = getattr(self._runner, "metrics", None)
        if isinstance(callbacks, MetricsLogger):
            payload = {**callbacks.pop(), **payload}
        return nest(payload)
