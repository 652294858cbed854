"""Vectorized envs with same-step auto-reset, the layout every EnvRunner relies on.

Same-step auto-reset (gymnasium's ``AutoresetMode.SAME_STEP``) returns the next episode's
first observation right away and the true final observation in ``info["final_obs"]``, so
no step of a rollout is wasted on a reset and truncated episodes can bootstrap from their
real last observation. gymnasium's numpy ``CartPoleVectorEnv`` is faster still, but it only
supports next-step auto-reset, which inserts a dummy transition after every episode end
that every learner would have to mask; ``SyncVectorEnv`` over 16 CartPoles measured
~160k steps/s here, well above what the policy forward allows anyway.

One env copy must not take the others down with it (RLlib's
``restart_failed_sub_environments``): :class:`ResilientVectorEnv` steps each copy on its own,
and a copy that raises (or hangs past the runner's :class:`CallDeadline`) is closed,
rebuilt and reset while the other copies' results of that step are kept. A copy whose step
returns a non-finite reward or observation (NaN, inf, or a float64 beyond float32's range,
which becomes inf in the training dtype) raises an :class:`EnvError` naming the env, or,
with ``on_non_finite="drop_episode"``, is reset like a crashed copy. Either way the broken
step is *aborted*: its copy reports ``truncated=True`` with reward 0 and, as final
observation, the observation the policy acted on, and ``aborted[i]`` is set so the runner
drops that episode from its episode metrics and keeps the transition finite (see
``docs/security.md``).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import concatenate, iterate

from lightning_rl.envs.registration import EnvContext, EnvCreator
from lightning_rl.errors import ConfigError, EnvError

log = logging.getLogger(__name__)

NON_FINITE_MODES = ("error", "drop_episode")
# Observations and rewards train as float32: a float64 beyond this is inf on the learner.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class EnvCallTimeout(BaseException):
    """Raised by a :class:`CallDeadline` inside the env call that is running when it expires.

    A ``BaseException`` so that an env's own ``except Exception`` cannot swallow it.
    """


class CallDeadline:
    """Bounds each env call of a block in the main thread to ``seconds`` with ``SIGALRM``.

    A call that takes longer is hung: :class:`EnvCallTimeout` is raised inside it. Time spent
    outside env calls (policy forward, a slow but progressing episode) never counts: one timer
    covers the whole block, and when it fires between calls, or during a call that started
    less than ``seconds`` ago, it is simply re-armed for the rest. Callers mark each env call
    by setting ``call_started`` (``time.monotonic()``) before it and ``None`` after.

    Why a signal and not a thread: a watchdog thread cannot stop a ``reset`` that sleeps or
    blocks on a socket in the main thread, and running every env call on a worker thread costs
    a thread hand-off per step (tens of microseconds, as much as a CartPole step) and breaks
    envs bound to their creating thread (OpenGL contexts, some simulators). ``SIGALRM`` costs
    two syscalls per ``sample`` call and interrupts blocking calls (Python retries them after the
    handler, which raises). Limits: only the main thread of the main interpreter receives
    signals, so elsewhere the block runs unbounded (Ray runners are bounded by their group's
    ``sample_timeout_s`` instead); C code that never returns to the interpreter cannot be
    interrupted. An outer timer (pytest-timeout's, a user's) keeps its deadline: the block's
    timer never runs past it, and when it is due its own handler gets the signal; otherwise it
    is restored with its remaining time when the block ends.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = float(seconds) if seconds else None
        self.armed = False
        self.call_started: float | None = None  # when the running env call began (None: none runs)
        self._previous_handler: Any = None
        self._previous_timer: tuple[float, float] = (0.0, 0.0)
        self._start = 0.0
        self._outer_deadline: float | None = None
        self._outer_fired = False

    def __enter__(self) -> CallDeadline:
        if (
            self.seconds is None
            or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()
        ):
            return self
        handler = signal.getsignal(signal.SIGALRM)
        remaining, interval = signal.getitimer(signal.ITIMER_REAL)
        if handler is None or (remaining and remaining <= self.seconds):
            return self  # a handler we could not restore, or an outer alarm that comes first
        self._previous_handler, self._previous_timer = handler, (remaining, interval)
        self._start = time.monotonic()
        # The outer alarm (pytest-timeout's, a user's) still fires on time inside the block.
        self._outer_deadline = self._start + remaining if remaining else None
        self._outer_fired = False
        signal.signal(signal.SIGALRM, self._expire)
        self._arm(self.seconds)
        self.armed = True
        return self

    def _arm(self, seconds: float) -> None:
        if self._outer_deadline is not None:
            seconds = min(seconds, max(self._outer_deadline - time.monotonic(), 1e-3))
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def rearm(self) -> None:
        """Give the rest of the block a fresh ``seconds`` (after a hung env copy was replaced)."""
        if self.armed:
            self._arm(self.seconds)

    def __exit__(self, *exc: Any) -> None:
        if not self.armed:
            return
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous_handler)
        remaining, interval = self._previous_timer
        if remaining and not self._outer_fired:
            left = remaining - (time.monotonic() - self._start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), interval)

    def _expire(self, signum: int, frame: Any) -> None:
        if self._outer_deadline is not None and time.monotonic() >= self._outer_deadline - 1e-3:
            # The outer alarm is due: hand the signal to its handler (it may raise).
            self._outer_fired = True
            signal.signal(signal.SIGALRM, self._previous_handler)
            if callable(self._previous_handler):
                self._previous_handler(signum, frame)
            return
        started = self.call_started
        left = self.seconds if started is None else self.seconds - (time.monotonic() - started)
        if left > 0:  # between env calls, or within a call's allowance: keep watching
            self._arm(left)
            return
        self.call_started = None
        raise EnvCallTimeout(f"no answer within sample_timeout_s={self.seconds:g} s")


def copy_failure(
    label: str, method: str, error: BaseException, *, failures: int, restart: bool, max_failures: int
) -> str:
    """What an env copy's failure was (logged, to be rebuilt), or the EnvError that ends the run.

    Shared by the single- and multi-agent runners so both give the same messages and limits.
    """
    if isinstance(error, EnvCallTimeout):
        reason = f"hung in {method}(): {error}"
    else:
        reason = f"raised in {method}(): {type(error).__name__}: {error}"
    if not restart:
        raise EnvError(f"{label} {reason} (restart_failed_sub_environments is off).") from error
    if failures > max_failures:
        raise EnvError(
            f"{label} failed {failures} times in a row without one good step; giving up. "
            f"Last failure: {reason}"
        ) from error
    log.warning("%s %s; rebuilding this copy.", label, reason)
    return f"{label} {reason}"


def close_failed_copy(env: Any, error: BaseException) -> None:
    """Close a failed copy before it is replaced; a hung one is left alone (close may hang too)."""
    if isinstance(error, EnvCallTimeout):
        return
    try:
        env.close()
    except Exception:  # a broken env may fail to close; it is replaced either way
        log.debug("closing the failed copy raised", exc_info=True)


def rebuilt_seed(first_seed: int, rebuilds: int) -> int:
    """The reset seed of an env copy's ``rebuilds``-th rebuild (distinct from every copy's first)."""
    return (int(first_seed) + 7919 * int(rebuilds)) % 2**31


def finite_rows(tree: Any, num_rows: int) -> np.ndarray:
    """Per row of a batched (possibly nested) array: every float value finite in float32."""
    ok = np.ones(num_rows, dtype=bool)
    for leaf in _leaves(tree):
        array = np.asarray(leaf)
        if array.dtype.kind == "f":
            ok &= (np.abs(array.reshape(num_rows, -1)) <= FLOAT32_MAX).all(axis=1)
    return ok


def all_finite(tree: Any) -> bool:
    """Every float value of a (possibly nested) array finite in float32 (ints always are)."""
    for leaf in _leaves(tree):
        array = np.asarray(leaf)
        if array.dtype.kind == "f" and not bool((np.abs(array) <= FLOAT32_MAX).all()):
            return False
    return True


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    if isinstance(tree, tuple | list):
        return [leaf for value in tree for leaf in _leaves(value)]
    return [tree]


def _has_float(space: gym.Space) -> bool:
    if isinstance(space, gym.spaces.Dict):
        return any(_has_float(s) for s in space.spaces.values())
    if isinstance(space, gym.spaces.Tuple):
        return any(_has_float(s) for s in space.spaces)
    return isinstance(space, gym.spaces.Box) and np.dtype(space.dtype).kind == "f"


def check_non_finite_mode(mode: str) -> str:
    if mode not in NON_FINITE_MODES:
        raise ConfigError(f"on_non_finite_env_output must be one of {list(NON_FINITE_MODES)}, got {mode!r}.")
    return mode


class ResilientVectorEnv(SyncVectorEnv):
    """``SyncVectorEnv`` (same-step auto-reset) whose copies fail, and are rebuilt, one at a time.

    Args:
        env_fns: one builder per copy (called again to rebuild a failed copy).
        name: the env's name, for error messages.
        restart_failed: rebuild a copy that raises; False: raise an :class:`EnvError`.
        max_consecutive_failures: a copy failing this many times in a row (no good step in
            between) is broken rather than flaky: raise instead of rebuilding it forever.
        on_non_finite: ``"error"`` or ``"drop_episode"`` (see the module docstring).
        where: appended to messages (e.g. which env runner).
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        name: str,
        *,
        restart_failed: bool = True,
        max_consecutive_failures: int = 10,
        on_non_finite: str = "error",
        where: str = "",
    ) -> None:
        super().__init__(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)
        self.name = name
        self.restart_failed = bool(restart_failed)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.on_non_finite = check_non_finite_mode(on_non_finite)
        self.where = where
        self.deadline: CallDeadline | None = None
        self.aborted = np.zeros(self.num_envs, dtype=bool)  # copies whose episode the last step aborted
        # Copies that step() leaves alone until the next reset() (evaluation: copies whose
        # counted episodes are done): observation unchanged, reward 0, not done.
        self.paused = np.zeros(self.num_envs, dtype=bool)
        self.last_failure: str | None = None  # what the latest failed or dropped copy did
        self.num_restarts = 0  # counters since the last pop_counters()
        self.num_aborted = 0
        self._failures = np.zeros(self.num_envs, dtype=np.int64)
        # A rebuilt copy is reset with a seed derived from its first one, so seeded runs with
        # crashes stay repeatable (gymnasium would draw an unseeded env's state from the OS).
        self._first_seeds: list[int | None] = [None] * self.num_envs
        self._rebuilds = [0] * self.num_envs
        self._next_seed: dict[int, int] = {}
        self._check_obs = _has_float(self.single_observation_space)

    def pop_counters(self) -> tuple[int, int]:
        """(copies rebuilt, episodes aborted) since the last call."""
        counters = (self.num_restarts, self.num_aborted)
        self.num_restarts = self.num_aborted = 0
        return counters

    # -- failures ----------------------------------------------------------------------------
    def _label(self, index: int) -> str:
        return f"env {self.name!r} (copy {index}{self.where})"

    def _failed(self, index: int, method: str, error: BaseException) -> None:
        """Rebuild copy ``index`` after it raised in ``method``, or raise when that is not allowed."""
        self._failures[index] += 1
        self.last_failure = copy_failure(
            self._label(index),
            method,
            error,
            failures=int(self._failures[index]),
            restart=self.restart_failed,
            max_failures=self.max_consecutive_failures,
        )
        if self.deadline is not None:
            self.deadline.rearm()
        close_failed_copy(self.envs[index], error)
        try:
            self._mark_call()
            self.envs[index] = self.env_fns[index]()
        except EnvError:
            raise
        except Exception as exc:
            raise EnvError(f"Rebuilding {self._label(index)} failed: {type(exc).__name__}: {exc}") from exc
        self.num_restarts += 1
        self._rebuilds[index] += 1
        first = self._first_seeds[index]
        if first is not None:
            self._next_seed[index] = rebuilt_seed(first, self._rebuilds[index])

    def _non_finite(self, index: int, what: str) -> None:
        if self.on_non_finite == "error":
            raise EnvError(
                f"{self._label(index)} returned a non-finite {what} (NaN, inf or beyond float32's range). "
                "Fix the env, or set on_non_finite_env_output='drop_episode' to drop such episodes."
            )
        self._failures[index] += 1
        if self._failures[index] > self.max_consecutive_failures:
            raise EnvError(
                f"{self._label(index)} returned a non-finite {what} {int(self._failures[index])} times in a "
                "row; giving up."
            )
        self.last_failure = f"{self._label(index)} returned a non-finite {what}"
        log.warning("%s returned a non-finite %s; dropping its episode.", self._label(index), what)

    def _reset_copy(
        self, index: int, seed: int | None = None, options: dict | None = None
    ) -> tuple[Any, dict]:
        """Reset one copy, rebuilding it while it fails (within the failure limits)."""
        while True:
            try:
                self._mark_call()
                obs, info = self.envs[index].reset(seed=self._next_seed.pop(index, seed), options=options)
            except (Exception, EnvCallTimeout) as exc:
                if isinstance(exc, EnvError):
                    raise
                self._failed(index, "reset", exc)
                continue
            if self._check_obs and not all_finite(obs):
                self._non_finite(index, "observation from reset()")
                continue
            return obs, info

    def _abort(self, infos: dict, index: int, last_obs: Any, reset: bool) -> dict:
        """End copy ``index``'s episode at this step: truncated, reward 0, final obs = ``last_obs``."""
        final = {"final_obs": last_obs, "final_info": {}}
        if "final_obs" in infos and infos["_final_obs"][index]:
            infos["final_obs"][index] = last_obs
            infos["final_info"][index] = {}
        else:
            infos = self._add_info(infos, final, index)
        self._rewards[index] = 0.0
        self._terminations[index] = False
        self._truncations[index] = True
        self.aborted[index] = True
        self.num_aborted += 1
        if reset:
            self._env_obs[index], _ = self._reset_copy(index)
        return infos

    # -- the vector env API ------------------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            if seeds[i] is not None and self._first_seeds[i] is None:
                self._first_seeds[i] = int(seeds[i])
            self._env_obs[i], info = self._reset_copy(i, seeds[i], options)
            infos = self._add_info(infos, info, i)
        self._end_call()
        self._terminations[:] = False
        self._truncations[:] = False
        self._autoreset_envs[:] = False
        self.aborted[:] = False
        self.paused[:] = False
        self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        return (self._copy_obs(), infos)

    def step(self, actions: Any):
        actions = iterate(self.action_space, actions)
        previous = list(self._env_obs)  # what each copy's policy acted on (final obs if aborted)
        if self.aborted.any():
            self.aborted[:] = False
        infos: dict[str, Any] = {}
        paused = self.paused if self.paused.any() else None
        # Locals and the deadline mark inlined (not _mark_call): this loop runs once per env copy
        # and step, and with attribute lookups and a method call there it took ~5% longer.
        envs, env_obs, rewards = self.envs, self._env_obs, self._rewards
        terminations, truncations = self._terminations, self._truncations
        deadline = self.deadline
        for i, action in enumerate(actions):
            if paused is not None and paused[i]:
                rewards[i] = 0.0
                terminations[i] = False
                truncations[i] = False
                continue
            try:
                if deadline is not None:
                    deadline.call_started = time.monotonic()
                obs, reward, terminated, truncated, info = envs[i].step(action)
            except (Exception, EnvCallTimeout) as exc:
                if isinstance(exc, EnvError):
                    raise
                self._failed(i, "step", exc)
                infos = self._abort(infos, i, previous[i], reset=True)
                continue
            env_obs[i] = obs
            rewards[i] = reward
            terminations[i] = terminated
            truncations[i] = truncated
            if terminated or truncated:
                if self._check_obs and not all_finite(obs):
                    self._non_finite(i, "observation")
                    infos = self._abort(infos, i, previous[i], reset=True)
                    continue
                infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                env_obs[i], info = self._reset_copy(i)
            if info or type(info) is not dict:  # an empty dict (most steps) adds nothing
                infos = self._add_info(infos, info, i)
        self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        # Fast path: two reductions per step; rows are looked at only when one fails.
        if not bool((np.abs(self._rewards) <= FLOAT32_MAX).all()) or (
            self._check_obs and not all_finite(self._observations)
        ):
            rewards_ok = np.abs(self._rewards) <= FLOAT32_MAX
            obs_ok = finite_rows(self._observations, self.num_envs) if self._check_obs else None
            for i in range(self.num_envs):
                if self.aborted[i]:
                    continue
                if not rewards_ok[i]:
                    self._non_finite(i, f"reward {float(self._rewards[i])!r}")
                elif obs_ok is not None and not obs_ok[i]:
                    self._non_finite(i, "observation")
                else:
                    continue
                done = bool(self._terminations[i] or self._truncations[i])
                infos = self._abort(infos, i, previous[i], reset=not done)
            self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        if self._failures.any():
            self._failures[~self.aborted] = 0
        self._autoreset_envs = np.logical_or(self._terminations, self._truncations)
        self._end_call()
        return (
            self._copy_obs(),
            np.copy(self._rewards),
            np.copy(self._terminations),
            np.copy(self._truncations),
            infos,
        )

    def _mark_call(self) -> None:
        if self.deadline is not None:
            self.deadline.call_started = time.monotonic()

    def _end_call(self) -> None:
        if self.deadline is not None:
            self.deadline.call_started = None

    def _copy_obs(self) -> Any:
        if not self.copy:
            return self._observations
        if type(self._observations) is np.ndarray:  # deepcopy's generic path costs ~10 us a step
            return self._observations.copy()
        return deepcopy(self._observations)


def _make_one(creator: EnvCreator, context: EnvContext) -> gym.Env:
    env = creator(context)
    if not isinstance(env, gym.Env):
        raise EnvError(
            f"Env {creator.name!r} created a {type(env).__name__}, not a gymnasium.Env; single-agent "
            "runners need the gymnasium API (reset() -> obs, info; step() -> obs, reward, "
            "terminated, truncated, info)."
        )
    return env


def make_vector_env(
    creator: EnvCreator,
    context: EnvContext,
    num_envs: int,
    *,
    restart_failed: bool = True,
    max_consecutive_failures: int = 10,
    on_non_finite: str = "error",
    where: str = "",
) -> ResilientVectorEnv:
    """``num_envs`` copies of the env in one process, each with its own ``vector_index``."""
    if num_envs < 1:
        raise EnvError(f"num_envs_per_env_runner must be >= 1, got {num_envs}")
    fns = [functools.partial(_make_one, creator, context.copy_with(vector_index=i)) for i in range(num_envs)]
    try:
        return ResilientVectorEnv(
            fns,
            creator.name,
            restart_failed=restart_failed,
            max_consecutive_failures=max_consecutive_failures,
            on_non_finite=on_non_finite,
            where=where,
        )
    except (EnvError, ConfigError):
        raise
    except Exception as exc:
        raise EnvError(
            f"Building {num_envs} copies of env {creator.name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
