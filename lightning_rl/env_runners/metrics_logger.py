"""RLlib's ``MetricsLogger``: what callbacks, EnvRunners and a ``custom_evaluation_function``
log with ``log_value`` and read back with ``peek``/``reduce``, bounded and plain.

One class serves both sides, as in RLlib:

* in an EnvRunner, callbacks log into ``metrics_logger`` and the runner sends :meth:`pop`'s
  payload (plain data, one :class:`Stats` per key) back with its results;
* on the driver, ``algorithm.metrics`` (:class:`~lightning_rl.TrainingRun.metrics`) merges
  those payloads (:meth:`merge_and_log_n_dicts`, e.g. what ``env_runner.get_metrics()``
  returned), reduces them (:meth:`reduce`) and reports what was logged since the last report
  (:meth:`report`) into ``train()``'s result and Lightning's loggers under the user's keys.

Reductions: ``"mean"``, ``"sum"``, ``"max"``, ``"min"``. Without ``window`` a mean, max or min is
over the values logged since the last :meth:`reduce` (RLlib's default is an exponential moving
average with coefficient 0.01; ``ema_coeff`` is accepted and not used); with ``window=N`` over
the last N values, across reduces. A sum adds up over the whole run (RLlib's lifetime counters)
unless ``clear_on_reduce=True``, then it restarts at every reduce.

Keys are strings or tuples of strings (``("evaluation", "env_runners")`` is
``"evaluation/env_runners"``); reading a key that is a prefix returns the nested dict under it.
This module sits in the env_runners layer and imports only core (cheap in a Ray actor).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from lightning_rl.errors import ConfigError

REDUCTIONS = ("mean", "sum", "max", "min")
#: Distinct metric keys one logger may hold (a bound on what travels back per sample).
MAX_METRIC_KEYS = 1000
#: The longest ``window`` a metric may ask for (values kept per key on runner and driver).
MAX_WINDOW = 100_000
_STAT_FIELDS = frozenset({"reduce", "window", "clear_on_reduce", "total", "count", "values"})


class Stats(dict):
    """One metric as plain picklable data (what :meth:`MetricsLogger.pop` and an EnvRunner's
    ``get_metrics()`` return per key): its reduction, window, the sum and count of the values
    logged, and the values a window or an extreme needs. ``peek()`` is the reduced value."""

    def peek(self) -> float:
        return _reduce_values(self)

    def __float__(self) -> float:
        return self.peek()


def is_stats(value: Any) -> bool:
    """Whether ``value`` is one metric's payload (a :class:`Stats`, or the same keys in a dict)."""
    return isinstance(value, Stats) or (isinstance(value, Mapping) and set(value) >= _STAT_FIELDS)


def metric_key(key: str | tuple[str, ...] | list[str]) -> str:
    """``("a", "b")`` -> ``"a/b"``; a key is a non-empty string or a tuple of them."""
    if isinstance(key, tuple | list):
        key = "/".join(str(k) for k in key)
    if not isinstance(key, str) or not key:
        raise ConfigError(f"metrics_logger keys are non-empty strings (or tuples of them), got {key!r}.")
    return key


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a/b": 1}`` -> ``{"a": {"b": 1}}`` (a key that is both a value and a prefix stays flat)."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split("/")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                if child is not None:  # "a" holds a value already: keep "a/b" flat beside it
                    node = None
                    break
                child = node[part] = {}
            node = child
        if node is None:
            nested[key] = value
        else:
            node[leaf] = value
    return nested


class MetricsLogger:
    """RLlib's ``MetricsLogger`` (``log_value``, ``log_dict``, ``merge_and_log_n_dicts``,
    ``reduce``, ``peek``); see the module docstring for the reductions."""

    def __init__(self) -> None:
        self._stats: dict[str, dict[str, Any]] = {}

    # -- logging -----------------------------------------------------------------------------
    def log_value(
        self,
        key: str | tuple[str, ...],
        value: Any,
        *,
        reduce: str = "mean",
        window: int | None = None,
        clear_on_reduce: bool = False,
        **_: Any,
    ) -> None:
        """Add one value under ``key`` (its reduction and window are fixed by the first call)."""
        stat = self._stat(metric_key(key), reduce, window, clear_on_reduce)
        value = _number(key, value)
        stat["total"] += value
        stat["count"] += 1
        values = stat["values"]
        if not stat["window"] and stat["reduce"] in ("max", "min"):
            pick = max if stat["reduce"] == "max" else min
            value = pick(value, values[0]) if values else value
        if stat["window"] or stat["reduce"] in ("max", "min"):
            values.append(value)
        stat["touched"] = True

    def log_dict(
        self, stats_dict: Mapping[str, Any], *, key: str | tuple[str, ...] | None = None, **kwargs: Any
    ) -> None:
        """Log every leaf of a nested dict under ``key``: numbers with ``log_value(**kwargs)``,
        :class:`Stats` (another logger's payload) merged with their own reduction."""
        prefix = metric_key(key) + "/" if key is not None else ""
        for name, value in stats_dict.items():
            full = f"{prefix}{name}"
            if is_stats(value):
                self._merge(full, value)
            elif isinstance(value, Mapping):
                self.log_dict(value, key=full, **kwargs)
            else:
                self.log_value(full, value, **kwargs)

    def merge_and_log_n_dicts(
        self,
        stats_dicts: Iterable[Mapping[str, Any]],
        *,
        key: str | tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        """Merge the results of n parallel components (e.g. each EnvRunner's ``get_metrics()``)
        into this logger under ``key``: windows and sums combine over all of them."""
        for stats_dict in stats_dicts:
            if not isinstance(stats_dict, Mapping):
                raise ConfigError(
                    f"merge_and_log_n_dicts takes dicts (e.g. EnvRunner.get_metrics()), got {stats_dict!r}."
                )
            self.log_dict(stats_dict, key=key, **kwargs)

    aggregate = merge_and_log_n_dicts  # RLlib 2.5x's name

    # -- reading -----------------------------------------------------------------------------
    def peek(self, key: str | tuple[str, ...] | None = None, default: Any = None, **_: Any) -> Any:
        """The current value of ``key`` (nested dict for a prefix; everything for None), or
        ``default`` when nothing was logged there. Nothing is reset."""
        found = self._under(key)
        if found is None:
            return default
        if isinstance(found, str):
            value = _value(self._stats[found])
            return default if value is None else value
        values = {k: _value(self._stats[full]) for k, full in found.items()}
        values = {k: v for k, v in values.items() if v is not None}
        return nest(values) if values else default

    def reduce(self, key: str | tuple[str, ...] | None = None, **_: Any) -> Any:
        """Reduce ``key`` (a metric, a prefix, or everything) and return the value(s): window-less
        means, maxima and minima start afresh, ``clear_on_reduce`` sums restart at 0."""
        found = self._under(key)
        if found is None:
            return {}
        if isinstance(found, str):
            return self._reduce_one(found)
        values = {k: self._reduce_one(full) for k, full in found.items()}
        return nest({k: v for k, v in values.items() if v is not None})

    def report(self, key: str | tuple[str, ...] | None = None) -> dict[str, Any]:
        """What was logged (or reduced) under ``key`` since the last report, reduced, as a nested
        dict: the framework's call that puts a user's metrics into results and loggers once."""
        found = self._under(key)
        if found is None or isinstance(found, str):
            found = {metric_key(key).rsplit("/", 1)[-1]: found} if isinstance(found, str) else {}
        out: dict[str, Any] = {}
        for rel, full in found.items():
            stat = self._stats[full]
            if not stat["touched"]:
                continue
            value = self._reduce_one(full) if _pending(stat) and stat["count"] else _value(stat)
            stat["touched"] = False
            if value is not None:
                out[rel] = value
        return nest(out)

    def pop(self) -> dict[str, Stats]:
        """Everything logged since the last pop as plain payloads, and start afresh (what a
        runner sends back; the driver's merge keeps windows and lifetime sums)."""
        out = {
            key: Stats(
                reduce=s["reduce"],
                window=s["window"],
                clear_on_reduce=s["clear_on_reduce"],
                total=s["total"],
                count=s["count"],
                values=list(s["values"]),
            )
            for key, s in self._stats.items()
            if s["count"]
        }
        self._stats = {}
        return out

    # -- internals ---------------------------------------------------------------------------
    def _stat(self, key: str, reduce: str, window: int | None, clear_on_reduce: bool) -> dict[str, Any]:
        stat = self._stats.get(key)
        if stat is not None:
            return stat
        if reduce not in REDUCTIONS:
            raise ConfigError(
                f"log_value({key!r}): reduce must be one of {list(REDUCTIONS)}, got {reduce!r}."
            )
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW
        ):
            raise ConfigError(
                f"log_value({key!r}): window must be an int in [1, {MAX_WINDOW}], got {window!r}."
            )
        if len(self._stats) >= MAX_METRIC_KEYS:
            raise ConfigError(f"log_value({key!r}): more than {MAX_METRIC_KEYS} metric keys logged.")
        stat = self._stats[key] = {
            "reduce": reduce,
            "window": window,
            "clear_on_reduce": bool(clear_on_reduce),
            "total": 0.0,
            "count": 0,
            "values": deque(maxlen=window or 1),
            "last": None,
            "touched": False,
        }
        return stat

    def _merge(self, key: str, payload: Mapping[str, Any]) -> None:
        stat = self._stat(key, payload["reduce"], payload["window"], payload["clear_on_reduce"])
        count = int(payload["count"])
        if count <= 0:
            return
        stat["total"] += float(payload["total"])
        stat["count"] += count
        values = [float(v) for v in payload["values"]]
        if stat["window"]:
            stat["values"].extend(values)
        elif stat["reduce"] in ("max", "min") and values:
            pick = max if stat["reduce"] == "max" else min
            stat["values"].append(pick([*values, *stat["values"]]))
        stat["touched"] = True

    def _under(self, key: str | tuple[str, ...] | None) -> str | dict[str, str] | None:
        """The full key of metric ``key``, or ``{relative: full}`` of the metrics under a prefix."""
        if key is None:
            return {k: k for k in self._stats} or None
        key = metric_key(key)
        if key in self._stats:
            return key
        prefix = key + "/"
        found = {k[len(prefix) :]: k for k in self._stats if k.startswith(prefix)}
        return found or None

    def _reduce_one(self, key: str) -> float | None:
        stat = self._stats[key]
        value = _value(stat)
        stat["touched"] = True
        if value is None:
            return None
        stat["last"] = value
        if stat["reduce"] == "sum":
            if stat["clear_on_reduce"]:
                stat["total"], stat["count"] = 0.0, 0
        elif stat["window"]:
            stat["count"] = 0
            if stat["clear_on_reduce"]:
                stat["values"].clear()
        else:
            stat["total"], stat["count"] = 0.0, 0
            stat["values"].clear()
        return value


def _pending(stat: Mapping[str, Any]) -> bool:
    """Whether ``stat`` has a value of its own now (else its last reduced value stands)."""
    if stat["reduce"] == "sum":
        return bool(stat["count"]) or (not stat["clear_on_reduce"] and stat["last"] is not None)
    if stat["window"]:
        return bool(stat["values"])
    return bool(stat["count"])


def _value(stat: Mapping[str, Any]) -> float | None:
    if not _pending(stat):
        return stat["last"]
    return _reduce_values(stat)


def _reduce_values(stat: Mapping[str, Any]) -> float:
    reduce = stat["reduce"]
    if reduce == "sum":
        return float(stat["total"])
    values = list(stat["values"])
    if reduce == "mean" and not stat["window"]:
        return float(stat["total"]) / stat["count"] if stat["count"] else float("nan")
    if not values:
        return float("nan")
    return float({"mean": np.mean, "max": np.max, "min": np.min}[reduce](values))


def _number(key: Any, value: Any) -> float:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        raise ConfigError(f"log_value({key!r}): the value must be a number, got {value!r}.") from None
