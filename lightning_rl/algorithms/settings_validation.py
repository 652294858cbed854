"""Checks of the settings every algorithm shares, run at construction before anything is built.

Plain functions over the hyperparameters (a mapping): validation needs no algorithm state, so
it can run (and be tested) before the policies exist, and an algorithm's own checks
(``validate_hparams``) reuse :func:`require_positive` for one uniform message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_rl._imports import object_path
from lightning_rl.algorithms.reward_clipping import check_clip_rewards
from lightning_rl.algorithms.runner_specs import placement_kwargs
from lightning_rl.env_runners.env_runner_group import EnvRunnerPlacement
from lightning_rl.envs.vector import check_non_finite_mode
from lightning_rl.errors import ConfigError
from lightning_rl.modules.initializers import canonical_initializer_settings
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.recurrent import is_recurrent, memory_switches
from lightning_rl.registry import algorithms_with


def require_positive(**values: Any) -> None:
    """One clear error for the first non-positive value among ``values``."""
    for name, value in values.items():
        if value is None or isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}.")


def plain_model_config(model_config: dict | DefaultModelConfig | None) -> dict | None:
    """``model_config`` as plain data: a custom model class is stored by import path, so
    checkpoints and YAML stay plain data."""
    if isinstance(model_config, DefaultModelConfig):
        model_config = model_config.to_dict()
    if isinstance(model_config, dict):  # initialisers by name, never the function (checked here)
        model_config = {**model_config, **canonical_initializer_settings(model_config)}
    custom = (model_config or {}).get("custom_model")
    if custom is None or isinstance(custom, str):
        return model_config
    path = object_path(custom)
    if path is None:
        raise ConfigError(
            f"model_config custom_model {custom!r} must be importable (defined at module level) so that "
            "EnvRunners and checkpoints can rebuild it."
        )
    return {**model_config, "custom_model": path}


def validate_common(h: Mapping[str, Any]) -> None:
    """The settings of :class:`~lightning_rl.algorithms.base.Algorithm` itself (one error each)."""
    for name in ["num_envs_per_env_runner", "train_batch_size", "evaluation_duration"]:
        if not isinstance(h[name], int) or isinstance(h[name], bool) or h[name] <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {h[name]!r}.")
    for name in ["num_env_runners", "evaluation_num_env_runners"]:
        if not isinstance(h[name], int) or h[name] < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {h[name]!r}.")
    if not (isinstance(h["lr"], int | float) and h["lr"] > 0):
        raise ConfigError(f"lr must be a positive number, got {h['lr']!r}.")
    if not 0.0 <= float(h["gamma"]) <= 1.0:
        raise ConfigError(f"gamma must be in [0, 1], got {h['gamma']!r}.")
    fragment = h["rollout_fragment_length"]
    if fragment != "auto" and (not isinstance(fragment, int) or fragment <= 0):
        raise ConfigError(f"rollout_fragment_length must be a positive integer or 'auto', got {fragment!r}.")
    if h["num_cpus_per_env_runner"] <= 0:
        raise ConfigError(f"num_cpus_per_env_runner must be positive, got {h['num_cpus_per_env_runner']!r}.")
    check_non_finite_mode(h["on_non_finite_env_output"])
    check_clip_rewards(h.get("clip_rewards"))
    limit = h["max_consecutive_non_finite_updates"]
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigError(f"max_consecutive_non_finite_updates must be an integer >= 1, got {limit!r}.")
    validate_cluster_settings(h)


def validate_cluster_settings(h: Mapping[str, Any]) -> None:
    """Placement, Ray connection and runner-health settings (one clear error each)."""
    for evaluation in (False, True):
        EnvRunnerPlacement(**placement_kwargs(h, evaluation))  # checks itself
    minimum = h["min_healthy_env_runners"]
    if minimum is not None and (
        not isinstance(minimum, int)
        or isinstance(minimum, bool)
        or not 1 <= minimum <= max(1, h["num_env_runners"])
    ):
        raise ConfigError(
            "min_healthy_env_runners must be None or an integer in [1, num_env_runners="
            f"{h['num_env_runners']}], got {minimum!r}."
        )
    for name in ("env_runner_health_probe_timeout_s", "env_runner_hung_timeout_s", "ray_resources_timeout_s"):
        value = h[name]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise ConfigError(f"{name} must be a positive number of seconds or None, got {value!r}.")
    if h["address"] is not None and not isinstance(h["address"], str):
        raise ConfigError(
            f"address must be a Ray address string (e.g. 'ray://head:10001', 'auto'), got {h['address']!r}."
        )
    if h["ray_init_kwargs"] is not None and not isinstance(h["ray_init_kwargs"], dict):
        raise ConfigError(
            f"ray_init_kwargs must be a dict of ray.init keyword arguments, got {h['ray_init_kwargs']!r}."
        )


def check_model_support(
    algorithm_name: str, model_config: DefaultModelConfig, supports_memory_models: bool, multi_agent: bool
) -> None:
    """Memory models only where the algorithm's modules honour them, and single-agent for now."""
    if not is_recurrent(model_config):
        return
    if not supports_memory_models:
        supported = ", ".join(algorithms_with("supports_memory_models"))
        raise ConfigError(
            f"model_config {memory_switches(model_config)[0]}=True: {algorithm_name} has no "
            f"memory-model support; algorithms that do: {supported}."
        )
    if multi_agent:
        raise ConfigError(
            "Memory models (use_lstm/use_gru/use_attention) are single-agent for now: the multi-agent "
            "runner does not yet carry per-agent recurrent state."
        )


def check_policies_to_train(wanted: list[str] | None, policy_ids: list[str]) -> None:
    if wanted is None:
        return
    unknown = [p for p in wanted if p not in policy_ids]
    if unknown:
        raise ConfigError(
            f"policies_to_train names unknown policies {unknown}; the policies are {policy_ids}."
        )
