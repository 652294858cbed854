"""Evaluation as RLlib runs it, for every DataModule: the duration and its unit, the time
limit, a user's ``custom_evaluation_function``, and evaluation overlapping training.

The DataModule (:meth:`ExperienceDataModule.evaluate`) owns the evaluation runner group; this
module holds what it does with it, so that the pieces stay small:

* :func:`evaluation_fault_tolerance`: the evaluation group may take ``evaluation_sample_timeout_s``
  (plus a grace) per call before it takes a runner for hung; the runners cut themselves at the
  limit (:class:`~lightning_rl.env_runners.evaluation_request.EvaluationBudget`), so a slow or
  never-ending evaluation returns what it has instead of being replaced forever.
* :func:`summarize`: runner results -> the batch ``validation_step`` logs.
* :func:`call_custom_evaluation`: RLlib's ``custom_evaluation_function(algorithm,
  eval_env_runner_group)``, returning a metrics dict (or RLlib's new-stack tuple
  ``(metrics, env_steps, agent_steps)``), merged into ``result["evaluation"]`` with what it
  logged into ``algorithm.metrics`` under ``"evaluation"``; the runners it reaches through
  ``foreach_env_runner`` sample as RLlib's do (:func:`evaluation_view_settings`).
* :class:`ParallelEvaluation`: ``evaluation_parallel_to_training``: the evaluation of an
  iteration starts when the iteration starts and runs on the evaluation actors while it trains.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from lightning_rl._imports import import_object, object_path
from lightning_rl.env_runners.env_runner import RunnerResult
from lightning_rl.env_runners.env_runner_group import FaultToleranceConfig
from lightning_rl.env_runners.evaluation_request import EVALUATION_DURATION_UNITS
from lightning_rl.env_runners.metrics_logger import MetricsLogger
from lightning_rl.env_runners.rllib_env_runner import RunnerViewSettings
from lightning_rl.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds an evaluation call may run past ``evaluation_sample_timeout_s`` (the runner checks
#: the clock once per env step) before the group takes the runner for hung.
TIMEOUT_GRACE_S = 30.0
#: Evaluation runners' indices start above the training runners' (their env seeds and episode
#: ids differ); RLlib's ``worker_index`` (1..N) is the index minus this offset.
EVALUATION_WORKER_INDEX_OFFSET = 10_000


def resolve_evaluation_function(value: Any, where: str = "") -> Callable[..., Any] | None:
    """``None``, a callable, or its import path (checked like callbacks' hooks: under a
    checkpoint's name guard only an allow-listed or registered function resolves)."""
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        try:
            value = import_object(value, kind="custom_evaluation_function")
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"Cannot import custom_evaluation_function {value!r}{where}: {exc}") from exc
        if callable(value):
            return value
    raise ConfigError(
        f"custom_evaluation_function{where} must be a callable fn(algorithm, eval_env_runner_group) "
        f"or its import path 'module:function', got {value!r}."
    )


def check_evaluation_settings(hparams: Mapping[str, Any]) -> None:
    """The evaluation settings RLlib adds to ``evaluation_duration``, checked at the door."""
    unit = hparams.get("evaluation_duration_unit", "episodes")
    if unit not in EVALUATION_DURATION_UNITS:
        raise ConfigError(
            f"evaluation_duration_unit must be one of {list(EVALUATION_DURATION_UNITS)}, got {unit!r}."
        )
    timeout = hparams.get("evaluation_sample_timeout_s")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise ConfigError(f"evaluation_sample_timeout_s must be a positive number or None, got {timeout!r}.")
    parallel = hparams.get("evaluation_parallel_to_training", False)
    if not isinstance(parallel, bool):
        raise ConfigError(f"evaluation_parallel_to_training must be True or False, got {parallel!r}.")


def storable_evaluation_function(fn: Callable[..., Any] | None) -> str | None:
    """The import path kept in hyperparameters (YAML, checkpoints); a lambda has none and must be
    passed again when restoring, as ``policy_mapping_fn`` lambdas are."""
    return None if fn is None else object_path(fn)


def evaluation_fault_tolerance(base: FaultToleranceConfig, timeout_s: float | None) -> FaultToleranceConfig:
    """The evaluation group's limits: a call is late only after the runners' own cut."""
    if timeout_s is None:
        return replace(base, sample_timeout_s=None)
    return replace(base, sample_timeout_s=float(timeout_s) + max(TIMEOUT_GRACE_S, 0.5 * float(timeout_s)))


def evaluation_view_settings(settings: Any, num_envs: int) -> RunnerViewSettings:
    """How an evaluation runner's RLlib view samples for a ``custom_evaluation_function``:
    cut at ``evaluation_sample_timeout_s``, exploring as evaluation does, RLlib's worker
    indices, metrics over each evaluation's own episodes (no window across evaluations, as the
    built-in evaluation reports them); ``sample()`` without arguments: one episode per env copy
    (``evaluation_duration_unit="episodes"``) or the runner's share of the steps."""
    steps = None
    if settings.evaluation_duration_unit == "timesteps":
        runners = max(1, int(settings.evaluation_num_env_runners))
        steps = max(num_envs, math.ceil(int(settings.evaluation_duration) / runners))
    return RunnerViewSettings(
        sample_timeout_s=settings.evaluation_sample_timeout_s,
        smoothing_window=None,
        worker_index_offset=EVALUATION_WORKER_INDEX_OFFSET,
        explore=bool(settings.evaluation_explore),
        default_num_timesteps=steps,
    )


def summarize(results: list[RunnerResult], timeout_s: float | None) -> dict[str, Any]:
    """The evaluation batch ``validation_step`` logs, from the runners' results."""
    returns = [x for r in results for x in r.stats.returns]
    lengths = [x for r in results for x in r.stats.lengths]
    policy_returns: dict[str, list[float]] = {}
    for episode in (x for r in results for x in r.stats.policy_returns):
        for policy_id, ret in episode.items():
            policy_returns.setdefault(policy_id, []).append(ret)
    agent_returns: dict[str, list[float]] = {}
    for episode in (x for r in results for x in r.stats.agent_returns):
        for agent_id, ret in episode.items():
            agent_returns.setdefault(agent_id, []).append(ret)
    cut = sum(getattr(r.stats, "num_episodes_cut", 0) for r in results)
    if cut:
        log.warning(
            "Evaluation stopped at evaluation_sample_timeout_s=%s s: %d episode(s) finished, %d running "
            "episode(s) were cut and are not in the evaluation metrics (evaluation/num_episodes_cut). "
            "An episode that never ends (a greedy policy standing still?) is cut each time; raise the "
            "timeout, shorten episodes (max_episode_steps) or evaluate with exploration.",
            timeout_s,
            len(returns),
            cut,
        )
    return {
        "agent_returns_mean": {a: sum(v) / len(v) for a, v in agent_returns.items()},
        "policy_returns": {pid: torch.tensor(v, dtype=torch.float64) for pid, v in policy_returns.items()},
        "episode_return": torch.tensor(returns, dtype=torch.float64),
        "episode_len": torch.tensor(lengths, dtype=torch.float64),
        "num_env_steps": sum(r.stats.num_env_steps for r in results),
        "seconds": max((r.stats.seconds for r in results), default=0.0),
        "extra_metrics": {"num_episodes_cut": float(cut)},
    }


def call_custom_evaluation(
    fn: Callable[..., Any], algorithm: Any, eval_group: Any, seconds: Callable[[], float]
) -> dict[str, Any]:
    """Run RLlib's ``custom_evaluation_function(algorithm, eval_env_runner_group)``.

    It returns a metrics dict, or RLlib's new-stack ``(metrics, env_steps, agent_steps)``;
    numeric leaves are logged as ``evaluation/<key>`` (nested keys joined by ``/``, so
    ``result["evaluation"]`` shows them nested as returned). Anything else is one error naming it.
    As in RLlib's new stack, what the function logged into ``algorithm.metrics`` under
    ``"evaluation"`` is the evaluation's result too (``("evaluation", "env_runners", k)`` as
    ``evaluation/k``, the name the built-in evaluation gives its own metrics), on top of the
    returned dict.
    """
    out = fn(algorithm, eval_group)
    env_steps = 0
    if isinstance(out, tuple):
        counts = out[1:]
        if len(out) != 3 or not all(isinstance(n, int | np.integer) for n in counts):
            raise ConfigError(
                "custom_evaluation_function must return a metrics dict or (metrics, env_steps, agent_steps) "
                f"with integer step counts, got {out!r}."
            )
        out, env_steps = out[0], int(out[1])
    if not isinstance(out, Mapping):
        raise ConfigError(f"custom_evaluation_function must return a dict of metrics, got {out!r}.")
    logged: dict[str, Any] = {}
    metrics = getattr(algorithm, "metrics", None)
    if isinstance(metrics, MetricsLogger):
        logged = metrics.report("evaluation")
        runners = logged.pop("env_runners", {})
        logged = {**runners, **logged} if isinstance(runners, Mapping) else {"env_runners": runners, **logged}
    return {
        "agent_returns_mean": {},
        "policy_returns": {},
        "episode_return": torch.zeros(0, dtype=torch.float64),
        "episode_len": torch.zeros(0, dtype=torch.float64),
        "num_env_steps": env_steps,
        "seconds": seconds(),
        "extra_metrics": {"num_env_steps": float(env_steps), **flat_numbers(out), **flat_numbers(logged)},
    }


def flat_numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1.0}``, keeping numbers (what a Lightning logger can
    take); strings, lists and None are left out."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_numbers(value, name + "/"))
        else:
            number = _scalar(value)
            if number is not None:
                flat[name] = number
    return flat


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool | int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.item())
    return None


def validates_this_epoch(trainer: pl.Trainer) -> bool:
    """Whether the fit loop runs validation at the end of the current epoch."""
    every = trainer.check_val_every_n_epoch
    limit = trainer.limit_val_batches
    if not every or limit == 0 or not trainer.enable_validation:
        return False
    return (trainer.current_epoch + 1) % every == 0


class ParallelEvaluation(pl.Callback):
    """``evaluation_parallel_to_training``: at the start of an iteration that evaluates, the
    evaluation of the current weights starts on the evaluation actors and runs while the
    iteration samples and learns; ``validation_step`` then collects it (RLlib reports it with
    the same iteration). The algorithm adds this callback itself (``configure_callbacks``)
    when the setting is on."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        experience = getattr(pl_module, "experience", None)
        if experience is not None and validates_this_epoch(trainer):
            experience.start_parallel_evaluation()
