"""RLlib's callback API: ``RLlibCallback``, per-hook callables, episodes and a metrics logger.

RLlib users port their callbacks unchanged: ``config.callbacks(MyCallbacks)`` or
``config.callbacks(on_episode_end=fn)``. Episode hooks run inside each EnvRunner (a callback
object is built there from a picklable :class:`CallbackSettings`), driver hooks
(``on_train_result``, ``on_evaluate_start/end``, ``on_checkpoint_loaded``) run in the
:class:`~lightning_rl.TrainingRun`. Values a hook logs with ``metrics_logger.log_value`` travel
back with the runner's episode stats as plain data, are merged over runners by
:class:`CustomMetrics` and reach ``result["env_runners"][key]`` and Lightning's loggers as
``env_runners/<key>``.

This module sits in the env_runners layer (the runner builds the callbacks) and imports only
core; it must stay cheap to import in a Ray actor (no Lightning, no tensordict).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning_rl._imports import import_object, object_path
from lightning_rl.env_runners.metrics_logger import MAX_METRIC_KEYS, MAX_WINDOW, MetricsLogger, Stats
from lightning_rl.errors import ConfigError

EPISODE_HOOKS = ("on_episode_start", "on_episode_step", "on_episode_end")
RUNNER_HOOKS = (*EPISODE_HOOKS, "on_sample_end")
DRIVER_HOOKS = ("on_train_result", "on_evaluate_start", "on_evaluate_end", "on_checkpoint_loaded")
HOOKS = (*RUNNER_HOOKS, *DRIVER_HOOKS)
__all__ = ["CallbackSettings", "CustomMetrics", "MetricsLogger", "RLlibCallback", "RunnerEpisode"]


class RLlibCallback:
    """RLlib's callback base class; override the hooks you need (all take keyword arguments).

    Every hook gets ``metrics_logger`` (log custom metrics with ``log_value``) and may ignore
    the arguments it does not use (``**kwargs``), as in RLlib. Episode hooks run in the
    EnvRunners: ``episode`` (:class:`RunnerEpisode`: ``id_``, ``get_return()``,
    ``get_observations()``, ``custom_data`` ...), ``env_runner``, ``env`` (the vector env),
    ``env_index`` and ``rl_module`` (the runner's inference policy). Driver hooks run where
    ``algo.train()`` runs, with ``algorithm`` (the TrainingRun).
    """

    def on_episode_start(
        self,
        *,
        episode: Any,
        env_runner: Any = None,
        metrics_logger: Any = None,
        env: Any = None,
        env_index: int = 0,
        rl_module: Any = None,
        **kwargs: Any,
    ) -> None:
        """After an episode's first observation (reset)."""

    def on_episode_step(
        self,
        *,
        episode: Any,
        env_runner: Any = None,
        metrics_logger: Any = None,
        env: Any = None,
        env_index: int = 0,
        rl_module: Any = None,
        **kwargs: Any,
    ) -> None:
        """After every env step of a running episode (also its last, before ``on_episode_end``)."""

    def on_episode_end(
        self,
        *,
        episode: Any,
        env_runner: Any = None,
        metrics_logger: Any = None,
        env: Any = None,
        env_index: int = 0,
        rl_module: Any = None,
        **kwargs: Any,
    ) -> None:
        """After an episode terminated or was truncated (not for episodes dropped after a crash)."""

    def on_sample_end(
        self, *, env_runner: Any = None, metrics_logger: Any = None, samples: Any = None, **kwargs: Any
    ) -> None:
        """At the end of a runner's ``sample()``; ``samples`` are the episodes finished in it."""

    def on_train_result(
        self, *, algorithm: Any, metrics_logger: Any = None, result: dict, **kwargs: Any
    ) -> None:
        """After each ``train()`` with its result dict (changes to ``result`` are returned)."""

    def on_evaluate_start(self, *, algorithm: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
        """Before every evaluation: the periodic ones inside ``train()`` (``evaluation_interval``)
        and ``algo.evaluate()``."""

    def on_evaluate_end(
        self, *, algorithm: Any, metrics_logger: Any = None, evaluation_metrics: dict, **kwargs: Any
    ) -> None:
        """After every evaluation, with its results (``result["evaluation"]``'s dict)."""

    def on_checkpoint_loaded(self, *, algorithm: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
        """After ``algo.restore(path)`` / ``TrainingRun.from_checkpoint`` loaded the weights."""


def _is_callback_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, RLlibCallback)


def _check_class(value: Any, where: str) -> type[RLlibCallback]:
    given = value
    if isinstance(value, functools.partial) and _is_callback_class(value.func):
        return value  # RLlib's examples pass functools.partial(MyCallback, setting=...)
    if isinstance(value, str):
        try:
            value = import_object(value, kind="callbacks_class", accept=_is_callback_class)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"Cannot import callbacks_class {value!r}{where}: {exc}") from exc
    if not _is_callback_class(value):
        raise ConfigError(
            f"callbacks_class{where} must be a subclass of lightning_rl.RLlibCallback (or its import "
            f"path 'module:Class'), got {given!r}" + (f" ({value!r})." if given is not value else ".")
        )
    return value


def _check_hook(name: str, value: Any, where: str) -> list[Callable[..., Any]]:
    values = list(value) if isinstance(value, list | tuple) else [value]
    hooks = []
    for item in values:
        if isinstance(item, str):
            try:
                item = import_object(item, kind=f"{name} callback")
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"Cannot import the {name} callback {item!r}{where}: {exc}") from exc
        if not callable(item):
            raise ConfigError(f"{name}{where} must be a callable (or a list of them), got {item!r}.")
        hooks.append(item)
    return hooks


@dataclass
class CallbackSettings:
    """What ``config.callbacks(...)`` set, as picklable data sent to every runner.

    ``build()`` makes one callback object per process; per-hook callables run after the
    class's hook of the same name, as RLlib 2.4x does.
    """

    callbacks_class: type[RLlibCallback] = RLlibCallback
    hooks: dict[str, list[Callable[..., Any]]] = field(default_factory=dict)

    def build(self) -> CallbackSet:
        return CallbackSet(self.callbacks_class(), self.hooks)

    def has_any(self, names: tuple[str, ...]) -> bool:
        """Whether any of these hooks is overridden or given (without building the object)."""
        return any(
            name in self.hooks
            or getattr(getattr(self.callbacks_class, "func", self.callbacks_class), name)
            is not getattr(RLlibCallback, name)
            for name in names
        )

    def to_plain(self) -> dict[str, Any] | None:
        """Import paths only (YAML, checkpoints); lambdas cannot be stored and must be passed
        again when restoring (as with ``policy_mapping_fn``)."""
        plain: dict[str, Any] = {}
        if self.callbacks_class is not RLlibCallback:
            path = object_path(self.callbacks_class)
            if path is not None:
                plain["callbacks_class"] = path
        for name, fns in self.hooks.items():
            paths = [object_path(fn) for fn in fns]
            if all(p is not None for p in paths):
                plain[name] = paths
        return plain or None


def resolve_callbacks(value: Any, where: str = "") -> CallbackSettings | None:
    """``None``, an :class:`RLlibCallback` subclass, its import path, a
    :class:`CallbackSettings`, or ``{"callbacks_class": ..., "on_episode_end": fn, ...}``
    (callables or import paths); anything else is one :class:`ConfigError` naming it."""
    if value is None or isinstance(value, CallbackSettings):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"callbacks_class", *HOOKS})
        if unknown:
            raise ConfigError(
                f"Unknown callbacks setting(s) {unknown}{where}; valid: {['callbacks_class', *HOOKS]}."
            )
        cls = value.get("callbacks_class")
        return CallbackSettings(
            _check_class(cls, where) if cls is not None else RLlibCallback,
            {
                name: _check_hook(name, fn, where)
                for name, fn in value.items()
                if name != "callbacks_class" and fn
            },
        )
    return CallbackSettings(_check_class(value, where))


class CallbackSet:
    """One process's callback object and per-hook callables; ``has(hook)`` is computed once, so
    a runner never calls a hook nobody overrode (no per-step cost without callbacks)."""

    def __init__(self, instance: RLlibCallback, hooks: Mapping[str, list[Callable[..., Any]]]) -> None:
        self.instance = instance
        self._calls: dict[str, list[Callable[..., Any]]] = {}
        for name in HOOKS:
            calls = []
            if getattr(type(instance), name) is not getattr(RLlibCallback, name):
                calls.append(getattr(instance, name))
            calls.extend(hooks.get(name, ()))
            if calls:
                self._calls[name] = calls

    def has(self, *names: str) -> bool:
        return any(name in self._calls for name in names)

    def call(self, name: str, **kwargs: Any) -> None:
        for fn in self._calls.get(name, ()):
            fn(**kwargs)


class EpisodeStatus:
    """What RLlib's single- and multi-agent episodes both answer: ``id`` (RLlib's ``id_``) and
    ``is_done``; a subclass sets ``id_``, ``is_terminated`` and ``is_truncated``."""

    id_: int
    is_terminated: bool
    is_truncated: bool

    @property
    def id(self) -> int:
        return self.id_

    @property
    def is_done(self) -> bool:
        return self.is_terminated or self.is_truncated


class RunnerEpisode(EpisodeStatus):
    """One env copy's running episode as RLlib's ``SingleAgentEpisode`` shows it to callbacks.

    Only runners with episode hooks build these; they keep the raw env observations, actions
    and rewards of the episode so far.
    """

    def __init__(self, id_: int, env_index: int, observation: Any) -> None:
        self.id_ = id_
        self.env_index = env_index
        self.custom_data: dict[str, Any] = {}
        self.observations: list[Any] = [observation]
        self.actions: list[Any] = []
        self.rewards: list[float] = []
        self.is_terminated = False
        self.is_truncated = False

    def add_step(
        self, observation: Any, action: Any, reward: float, terminated: bool, truncated: bool
    ) -> None:
        self.observations.append(observation)
        self.actions.append(action)
        self.rewards.append(float(reward))
        self.is_terminated, self.is_truncated = bool(terminated), bool(truncated)

    def get_return(self) -> float:
        return float(sum(self.rewards))

    def env_steps(self) -> int:
        """Env steps in this episode (chunk); RLlib's ``SingleAgentEpisode.env_steps()``."""
        return len(self.rewards)

    agent_steps = env_steps  # one agent: its steps are the env's

    def get_length(self) -> int:
        return len(self.rewards)

    __len__ = get_length

    def get_observations(self, indices: int | slice | list[int] | None = None) -> Any:
        return _pick(self.observations, indices)

    def get_actions(self, indices: int | slice | list[int] | None = None) -> Any:
        return _pick(self.actions, indices)

    def get_rewards(self, indices: int | slice | list[int] | None = None) -> Any:
        return _pick(self.rewards, indices)


def _pick(items: list[Any], indices: int | slice | list[int] | None) -> Any:
    if indices is None:
        return list(items)
    if isinstance(indices, int):
        return items[indices]
    if isinstance(indices, slice):
        return items[indices]
    return [items[i] for i in indices]


class CustomMetrics:
    """The driver's side: merges the runners' :meth:`MetricsLogger.pop` payloads of one
    iteration into ``{key: value}``, keeping windows and lifetime sums across iterations."""

    def __init__(self) -> None:
        self._windows: dict[str, deque] = {}
        self._sums: dict[str, float] = {}

    def merge(self, payloads: list[Mapping[str, Mapping[str, Any]]]) -> dict[str, float]:
        merged: dict[str, dict[str, Any]] = {}
        for payload in payloads:
            for key, stat in (payload or {}).items():
                if key not in merged and len(merged) >= MAX_METRIC_KEYS:
                    continue
                into = merged.setdefault(key, {**stat, "total": 0.0, "count": 0, "values": []})
                into["total"] += stat["total"]
                into["count"] += stat["count"]
                into["values"].extend(stat["values"])
        out = {}
        for key, stat in merged.items():
            reduce, window = stat["reduce"], stat["window"]
            if reduce == "sum":
                if stat["clear_on_reduce"]:
                    out[key] = float(stat["total"])
                else:
                    self._sums[key] = self._sums.get(key, 0.0) + stat["total"]
                    out[key] = self._sums[key]
            elif window:
                history = self._windows.setdefault(key, deque(maxlen=min(int(window), MAX_WINDOW)))
                history.extend(stat["values"])
                out[key] = Stats({**stat, "values": list(history)}).peek()
            elif reduce == "mean":
                out[key] = stat["total"] / stat["count"]
            else:
                out[key] = float((max if reduce == "max" else min)(stat["values"]))
        return out
